//! service-dds: enriched orders in, Data Vault loaded, counter events out.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    vault_runtime::main_for::<service_dds::DdsStage>(service_dds::PROFILE).await
}
