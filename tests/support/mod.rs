//! Shared helpers for the integration tests (`mod support;` in a test file).
pub mod camfs;
pub mod fakeclock;
pub mod faultfs;
pub mod faultproxy;
pub mod garage;
pub mod mosquitto;
pub mod postgres;
pub mod rtsp;
