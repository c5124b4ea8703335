//! The configuration's environment, through the real binary: region, endpoint and CA bundle
//! left empty in `[remote]` follow the AWS conventions and `config show` says where each came
//! from; environment variables that name no configuration section (Kubernetes injects
//! `TIERLOG_PORT`, … for a service named `tierlog`) are warned about once and ignored.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tierlog_integration::cli::{json_lines, run};

fn s3_config(dir: &Path, remote: &str) -> PathBuf {
    let path = dir.join("tierlog.toml");
    std::fs::write(
        &path,
        format!("data_dir = \"{}\"\n[remote]\nurl = \"s3://b/p\"\n{remote}\n", dir.join("data").display()),
    )
    .unwrap();
    path
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// `config show`'s line for `key`.
fn shown(config: &Path, vars: &[(String, String)], key: &str) -> Value {
    let out = run(config, vars, &["config", "show"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    json_lines(&out).into_iter().find(|l| l["key"] == key).unwrap_or_else(|| panic!("{key} not shown"))
}

#[test]
fn the_region_comes_from_the_config_then_aws_region_then_the_profile_then_us_east_1() {
    let dir = tempfile::tempdir().unwrap();
    let aws_config = dir.path().join("aws-config");
    std::fs::write(&aws_config, "[default]\nregion = eu-central-1\n[profile archive]\nregion = eu-north-1\n").unwrap();
    let file = aws_config.display().to_string();
    let config = s3_config(dir.path(), "");

    let line = shown(&config, &[], "remote.region");
    assert_eq!(line["value"], "us-east-1", "{line}");
    assert!(line["source"].as_str().unwrap().starts_with("default (no region in remote.region, AWS_REGION"), "{line}");

    let line = shown(&config, &env(&[("AWS_CONFIG_FILE", &file)]), "remote.region");
    assert_eq!(
        line,
        serde_json::json!({"key": "remote.region", "value": "eu-central-1", "source": "AWS profile 'default' (shared config file)"})
    );
    let line = shown(&config, &env(&[("AWS_CONFIG_FILE", &file), ("AWS_PROFILE", "archive")]), "remote.region");
    assert_eq!(line["value"], "eu-north-1", "{line}");
    let profiled = s3_config(dir.path(), "profile = \"archive\"");
    assert_eq!(shown(&profiled, &env(&[("AWS_CONFIG_FILE", &file)]), "remote.region")["value"], "eu-north-1");

    let vars = env(&[("AWS_CONFIG_FILE", &file), ("AWS_DEFAULT_REGION", "ap-south-1")]);
    assert_eq!(shown(&config, &vars, "remote.region")["source"], "env AWS_DEFAULT_REGION");
    let vars = env(&[("AWS_CONFIG_FILE", &file), ("AWS_DEFAULT_REGION", "ap-south-1"), ("AWS_REGION", "sa-east-1")]);
    let line = shown(&config, &vars, "remote.region");
    assert_eq!((line["value"].as_str(), line["source"].as_str()), (Some("sa-east-1"), Some("env AWS_REGION")));

    let fixed = s3_config(dir.path(), "region = \"garage\"");
    let line = shown(&fixed, &vars, "remote.region");
    assert_eq!((line["value"].as_str(), line["source"].as_str()), (Some("garage"), Some("file")));
}

/// Connections made to a listener standing in for EC2 instance metadata, while `config show`
/// resolves `config`'s region.
fn instance_metadata_connections(config: &Path) -> (usize, Value) {
    let imds = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let vars = env(&[
        ("AWS_EC2_METADATA_DISABLED", "false"),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &format!("http://{}", imds.local_addr().unwrap())),
    ]);
    let line = shown(config, &vars, "remote.region");
    imds.set_nonblocking(true).unwrap();
    let asked = std::iter::from_fn(|| imds.accept().ok()).count(); // queued in the backlog
    (asked, line)
}

/// With no region anywhere, instance metadata is asked only for AWS itself: a custom endpoint
/// (MinIO, Garage) does not take an EC2 instance's region, and off EC2 each connect would
/// wait for the metadata timeout.
#[test]
fn instance_metadata_is_not_asked_for_the_region_of_a_custom_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (asked, line) = instance_metadata_connections(&s3_config(dir.path(), ""));
    assert!(asked > 0, "without an endpoint the chain asks instance metadata: {line}");
    let custom = s3_config(dir.path(), "endpoint = \"http://127.0.0.1:9\"\nallow_http = true");
    let (asked, line) = instance_metadata_connections(&custom);
    assert_eq!(asked, 0, "instance metadata was asked for a custom endpoint's region: {line}");
    assert_eq!(line["value"], "us-east-1", "{line}");
    assert!(line["source"].as_str().unwrap().contains("not asked for an endpoint outside AWS"), "{line}");
}

#[test]
fn the_endpoint_comes_from_the_config_then_aws_endpoint_url_s3_then_aws_endpoint_url() {
    let dir = tempfile::tempdir().unwrap();
    let config = s3_config(dir.path(), "");
    let line = shown(&config, &[], "remote.endpoint");
    assert_eq!((line["value"].as_str(), line["source"].as_str()), (Some(""), Some("default")), "AWS's own endpoint");

    let global = ("AWS_ENDPOINT_URL", "https://s3.global.example");
    let line = shown(&config, &env(&[global]), "remote.endpoint");
    assert_eq!((line["value"].as_str(), line["source"].as_str()), (Some(global.1), Some("env AWS_ENDPOINT_URL")));
    let s3_only = ("AWS_ENDPOINT_URL_S3", "https://s3.private.example:9000");
    let line = shown(&config, &env(&[global, s3_only]), "remote.endpoint");
    assert_eq!((line["value"].as_str(), line["source"].as_str()), (Some(s3_only.1), Some("env AWS_ENDPOINT_URL_S3")));
    let ignored = env(&[global, s3_only, ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")]);
    assert_eq!(shown(&config, &ignored, "remote.endpoint")["value"], "");

    let own = s3_config(dir.path(), "endpoint = \"https://minio.internal:9000\"");
    let line = shown(&own, &env(&[global, s3_only]), "remote.endpoint");
    assert_eq!((line["value"].as_str(), line["source"].as_str()), (Some("https://minio.internal:9000"), Some("file")));

    // A plain-HTTP endpoint from the environment still needs remote.allow_http.
    let config = s3_config(dir.path(), "");
    let out = run(&config, &env(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")]), &["config", "show"], "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("env AWS_ENDPOINT_URL") && err.contains("remote.allow_http"),
        "{err}"
    );
}

#[test]
fn a_ca_bundle_comes_from_remote_ca_file_then_aws_ca_bundle_and_a_bad_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = s3_config(dir.path(), "");
    let missing = dir.path().join("missing.pem").display().to_string();
    let out = run(&config, &env(&[("AWS_CA_BUNDLE", &missing)]), &["config", "show"], "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("env AWS_CA_BUNDLE") && err.contains(&missing), "{err}");

    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let own = s3_config(dir.path(), &format!("ca_file = \"{}\"", junk.display()));
    let out = run(&own, &env(&[("AWS_CA_BUNDLE", &missing)]), &["config", "show"], "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("remote.ca_file") && err.contains("holds no certificate"), "{err}");
}

#[test]
fn storage_class_and_sse_settings_are_checked_naming_the_key_and_what_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    for (remote, expected) in [
        ("storage_class = \"GLACIER\"", "need a restore before a GET"),
        ("storage_class = \"standard\"", "expected one of STANDARD"),
        ("sse = \"sse-c\"", "remote.sse = \"sse-c\""),
        ("sse_kms_key_id = \"alias/k\"", "remote.sse_kms_key_id is set but remote.sse"),
    ] {
        let config = s3_config(dir.path(), remote);
        let out = run(&config, &[], &["config", "show"], "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(expected), "{remote}: {err}");
    }
    let config = s3_config(
        dir.path(),
        "storage_class = \"INTELLIGENT_TIERING\"\nsse = \"aws:kms\"\nsse_kms_key_id = \"alias/k\"",
    );
    assert_eq!(shown(&config, &[], "remote.sse")["value"], "aws:kms");
}

/// Kubernetes gives every pod of a service named `tierlog` `TIERLOG_PORT=tcp://…`: the command
/// must run, and say once (not once per configuration load) that it ignores it.
#[test]
fn an_unknown_tierlog_variable_is_not_fatal_and_is_warned_about_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tierlog.toml");
    std::fs::write(&config, format!("data_dir = \"{}\"\n", dir.path().join("data").display())).unwrap();
    let vars = env(&[("TIERLOG_PORT", "tcp://10.0.0.1:80")]);
    for args in
        [&["config", "show"][..], &["topic", "create", "t"], &["produce", "t"], &["consume", "t", "--from-beginning"]]
    {
        let out = run(&config, &vars, args, "a record\n");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert_eq!(stderr.matches("TIERLOG_PORT").count(), 1, "{args:?} warns exactly once: {stderr}");
        assert!(stderr.contains("ignoring an environment variable"), "{stderr}");
    }
}
