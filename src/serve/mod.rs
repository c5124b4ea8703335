//! The front ends of `tierlog serve`, over one shared state: the HTTP API ([`http`]), the
//! Kafka protocol ([`kafka`]), the tokens and rights both check ([`auth`]), and appending a
//! request's records ([`append`]), shared by both.

pub mod append;
pub mod audit_log;
pub mod auth;
mod connection;
pub mod http;
pub mod kafka;
pub mod metrics;
