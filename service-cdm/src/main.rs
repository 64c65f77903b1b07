//! service-cdm: counter events in, exact datamarts out.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    vault_runtime::app::main_for(service_cdm::PROFILE, service_cdm::CdmHandler::new).await
}
