//! Integration tests: real GStreamer pipelines, a real RTSP server on
//! 127.0.0.1, the real file system, and sealed output checked with the `age`
//! crate, Debian's `age` CLI, and ffprobe.

// Test and measurement code: a panic here is a failed run with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
#[allow(dead_code)]
mod support;

mod acl;
mod campaign;
mod cli;
mod commands;
mod crash;
mod dock;
mod dock_faults;
mod dock_load;
mod export;
mod export_input;
mod faults;
mod harness;
mod hq_fleet;
mod hq_objects;
mod hq_replicas;
mod hq_service;
mod mqtt;
mod mqtt5;
mod mqtt_cli;
mod mqtt_envelopes;
mod offload;
mod offload_backlog;
mod offload_client;
mod offload_commands;
mod offload_failures;
mod offload_fetch;
mod offload_free;
mod offload_vhost;
mod offload_when;
mod postgres;
mod record;
mod retention;
mod rtsp;
mod service;
mod sources;
mod structure;
