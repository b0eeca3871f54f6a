//! One session's life: from start-up (restore decision, profile, launch) to
//! connected and back, driven by probes and policies. Owns the state machine;
//! never touches another session.

pub mod state;

pub use state::{Lifeline, SessionState, Transition};
