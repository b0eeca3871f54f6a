//! Helpers shared by the integration tests. Each area has its own file;
//! not every test binary uses every helper, hence the allowance.
#![allow(dead_code)]

pub mod api;
pub mod chaos;
pub mod chromium;
pub mod fixture;
pub mod fleet;
pub mod host;
pub mod journal;
pub mod languages;
pub mod plugins;
pub mod profile;
pub mod proxy;
pub mod s3;
pub mod storage;
pub mod webhook;
