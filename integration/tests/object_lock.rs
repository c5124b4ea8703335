//! S3 Object Lock (WORM) against the S3 server under test (integration/src/object_lock.rs).
//! Where it has Object Lock (moto in CI: it enforces compliance retention and legal holds),
//! every object a locked topic writes is locked, the store refuses to delete it, expiry waits
//! for the lock and then deletes the versions themselves, a longer policy extends what is
//! stored, and legal holds set S3's flag. Where it has not (s3s-fs in `cargo test`, Garage in
//! CI, a local directory), a topic asking for a lock stops tiering from starting.

use tierlog_integration::S3Target;
use tierlog_integration::object_lock as scenario;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_asking_for_object_lock_on_a_store_without_it_stops_tiering_from_starting() {
    scenario::refused_without_object_lock(&S3Target::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_topic_writes_every_object_under_compliance_retention_that_the_store_then_enforces() {
    scenario::a_locked_topic_writes_every_object_under_compliance_retention_that_the_store_then_enforces(
        &S3Target::start(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_objects_wait_for_their_lock_and_unlocked_ones_go_with_every_version() {
    scenario::expired_objects_wait_for_their_lock_and_unlocked_ones_go_with_every_version(&S3Target::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_lock_extends_every_stored_object_and_never_shortens_one() {
    scenario::a_longer_lock_extends_every_stored_object_and_never_shortens_one(&S3Target::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legal_hold_sets_the_s3_flag_on_held_objects_and_release_leaves_it() {
    scenario::a_legal_hold_sets_the_s3_flag_on_held_objects_and_release_leaves_it(&S3Target::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rev_lock_a_lock_turned_off_and_on_again_locks_what_was_written_meanwhile() {
    scenario::a_lock_turned_off_and_on_again_locks_what_was_written_meanwhile(&S3Target::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rev_lock_governance_to_compliance_upgrades_what_is_stored() {
    scenario::governance_to_compliance_upgrades_what_is_stored(&S3Target::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rev_lock_object_lock_mode_none_means_off_at_startup_too() {
    scenario::object_lock_mode_none_means_off_at_startup_too().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rev_lock_hold_release_keeps_a_legal_hold_tierlog_did_not_set() {
    scenario::hold_release_keeps_a_legal_hold_tierlog_did_not_set(&S3Target::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rev_lock_hold_set_flags_expired_objects_still_pending_deletion() {
    scenario::hold_set_flags_expired_objects_still_pending_deletion(&S3Target::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rev_lock_a_locked_pending_delete_is_not_asked_about_again_before_its_lock_ends() {
    scenario::a_locked_pending_delete_is_not_asked_about_again_before_its_lock_ends(&S3Target::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known gap (issue 12 note): manifest entries do not record the locked version id, so reads follow the current version; verify reports the object missing or changed"]
async fn rev_lock_a_delete_marker_on_a_locked_object_does_not_hide_its_records() {
    scenario::a_delete_marker_on_a_locked_object_does_not_hide_its_records(&S3Target::start()).await;
}
