//! Helpers shared by the integration tests. Each area has its own file;
//! not every test binary uses every helper.
#![allow(dead_code)]

pub mod plugins;
