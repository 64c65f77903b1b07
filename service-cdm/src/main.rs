//! service-cdm: counter events in, exact datamarts out.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    vault_runtime::main_for::<service_cdm::CdmStage>(service_cdm::PROFILE).await
}
