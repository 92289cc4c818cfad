//! [`Clock`]: the wall clock certificate validity is judged by, injectable
//! so rotation tests run on a paused tokio clock with a fake wall clock.

use std::time::SystemTime;

/// The wall clock (UTC, as certificates see time).
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}
