//! The end-to-end scenarios (tiering, verify, restore) against MinIO in Docker, through testcontainers.
//!
//! Needs a Docker engine, so it is ignored by default. Run it with:
//!
//! ```sh
//! cargo test -p tierlog-integration --test minio -- --ignored
//! ```

use testcontainers::core::{ExecCommand, IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};
use tierlog_integration::S3Target;

const USER: &str = "minioadmin";
const PASSWORD: &str = "minioadmin";
const BUCKET: &str = "tierlog-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Docker: cargo test -p tierlog-integration --test minio -- --ignored"]
async fn tiering_round_trip_against_minio() {
    let (_container, s3) = minio().await;
    tierlog_integration::scenarios::tier_round_trip(&s3).await;
}

/// verify finds and names each tamper case (docs/AUDIT.md) against MinIO too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Docker: cargo test -p tierlog-integration --test minio -- --ignored"]
async fn verify_detects_tampering_against_minio() {
    let (_container, s3) = minio().await;
    tierlog_integration::scenarios::verify_detects_tampering(&s3).await;
}

/// restore rebuilds a node from MinIO alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Docker: cargo test -p tierlog-integration --test minio -- --ignored"]
async fn restore_round_trip_against_minio() {
    let (_container, s3) = minio().await;
    tierlog_integration::scenarios::restore_round_trip(&s3).await;
}

/// Read-only replicas serve and follow a writer on MinIO, and never write to it; a restore to
/// a point serves exactly that history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Docker: cargo test -p tierlog-integration --test minio -- --ignored"]
async fn replicas_against_minio() {
    let (_container, s3) = minio().await;
    tierlog_integration::scenarios::replica_follows_writer(&s3).await;
    tierlog_integration::scenarios::restore_to_point(&s3).await;
}

/// S3 Object Lock on MinIO: locked writes, refused deletes, expiry waiting for the lock,
/// extensions and legal-hold flags (the same scenarios CI runs against moto).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Docker: cargo test -p tierlog-integration --test minio -- --ignored"]
async fn object_lock_against_minio() {
    use tierlog_integration::object_lock as scenario;
    let (_container, s3) = minio().await;
    scenario::a_locked_topic_writes_every_object_under_compliance_retention_that_the_store_then_enforces(&s3).await;
    scenario::expired_objects_wait_for_their_lock_and_unlocked_ones_go_with_every_version(&s3).await;
    scenario::a_longer_lock_extends_every_stored_object_and_never_shortens_one(&s3).await;
    scenario::a_legal_hold_sets_the_s3_flag_on_held_objects_and_release_leaves_it(&s3).await;
}

/// A MinIO container with the test bucket, and the target that talks to it (the container
/// stops when dropped).
async fn minio() -> (testcontainers::ContainerAsync<GenericImage>, S3Target) {
    let container = GenericImage::new("minio/minio", "latest")
        .with_exposed_port(9000.tcp())
        .with_wait_for(WaitFor::message_on_stdout("API:"))
        .with_env_var("MINIO_ROOT_USER", USER)
        .with_env_var("MINIO_ROOT_PASSWORD", PASSWORD)
        .with_cmd(["server", "/data"])
        .start()
        .await
        .expect("start MinIO (is Docker running?)");
    let create_bucket = format!("mc alias set local http://127.0.0.1:9000 {USER} {PASSWORD} && mc mb local/{BUCKET}");
    container.exec(ExecCommand::new(["sh", "-c", &create_bucket])).await.expect("create bucket");
    let port = container.get_host_port_ipv4(9000.tcp()).await.expect("mapped port");
    let s3 = S3Target::custom(format!("http://127.0.0.1:{port}"), BUCKET, USER, PASSWORD, "minio");
    (container, s3)
}
