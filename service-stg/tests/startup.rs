//! The service binary's contract at start: a bad setting stops it with one clear line naming
//! the variable and a non-zero exit.

use std::process::Command;

fn run_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_service-stg"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run service-stg");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_missing_database_setting_stops_the_service_with_one_line_naming_it() {
    let (code, stderr) = run_with(&[]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

#[test]
fn a_malformed_port_stops_the_service_with_one_line_naming_it() {
    let (code, stderr) = run_with(&[
        ("DATABASE_URL", "postgres://u@127.0.0.1:1/d"),
        ("KAFKA_PORT", "ninety-two"),
    ]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("KAFKA_PORT"), "{stderr}");
}

#[test]
fn credentials_never_reach_the_error_line() {
    let (code, stderr) = run_with(&[
        ("DATABASE_URL", "postgres://u:s3cr3t-pw@127.0.0.1:1/d"),
        ("KAFKA_USERNAME", "svc"),
        ("KAFKA_PASSWORD", "hunter2-secret"),
        ("KAFKA_CA_CERT", "/nonexistent/ca.pem"),
    ]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("KAFKA_CA_CERT"), "{stderr}");
    assert!(
        !stderr.contains("hunter2") && !stderr.contains("s3cr3t"),
        "{stderr}"
    );
}
