//! datagen: `POST /push {"N": n}` pushes n synthetic orders into Vaultline.

use vault_runtime::ProcessEnv;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    vault_runtime::init_tracing();
    let settings = match datagen::Settings::from(&ProcessEnv) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("datagen: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let app = match datagen::Application::build(settings) {
        Ok(app) => app,
        Err(error) => {
            eprintln!("datagen: {error:#}");
            return std::process::ExitCode::from(2);
        }
    };
    match app
        .run_until_stopped(vault_runtime::shutdown_signal())
        .await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "datagen failed.");
            std::process::ExitCode::FAILURE
        }
    }
}
