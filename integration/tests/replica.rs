//! Read-only replicas against a real S3 server (in-process s3s-fs by default; moto and
//! Garage in CI): the library-level scenario, and `serve --replica` / `consume --replica` as
//! real processes next to a writer on the same bucket.

use tierlog_integration::S3Target;
use tierlog_integration::scenarios;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_and_follow_the_writer_and_never_write() {
    let s3 = S3Target::start();
    scenarios::replica_follows_writer(&s3).await;
}
