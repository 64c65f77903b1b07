//! service-stg: raw orders in, enriched orders out, raw copies kept in `stg`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    vault_runtime::main_for::<service_stg::StgStage>(service_stg::PROFILE).await
}
