//! Helpers shared by the integration tests. Each test binary uses a part of
//! them, hence the allowance.
#![allow(dead_code)]

pub mod chromium;
pub mod fixture;
