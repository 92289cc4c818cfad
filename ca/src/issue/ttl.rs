//! Certificate lifetimes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Why a lifetime was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TtlError {
    /// Zero or negative.
    #[error("certificate lifetime must be positive, got {seconds} s")]
    NotPositive {
        /// The value given, in seconds.
        seconds: i64,
    },
    /// Longer than a certificate date can represent from now.
    #[error("certificate lifetime of {seconds} s is beyond any representable date")]
    TooLong {
        /// The lifetime, in seconds.
        seconds: u64,
    },
    /// Not a duration such as `90s`, `30m`, `24h` or `7d`.
    #[error("{input:?} is not a duration (examples: 90s, 30m, 24h, 7d): {reason}")]
    Unparsable {
        /// The input.
        input: String,
        /// What the parser said.
        reason: String,
    },
}

/// A positive certificate lifetime, in whole seconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(Duration);

impl Ttl {
    /// The longest lifetime a [`Ttl`] can hold (`i64::MAX` seconds).
    /// Issuing for it fails with [`TtlError::TooLong`]; config validation
    /// bounds the configured lifetimes far below.
    pub const MAX: Self = Self(Duration::from_secs(i64::MAX as u64));

    /// A lifetime from a compile-time constant number of seconds.
    ///
    /// `seconds` must be positive; zero yields one second so a typo in a
    /// constant cannot produce an unusable lifetime.
    pub const fn from_const_secs(seconds: u64) -> Self {
        if seconds == 0 {
            Self(Duration::from_secs(1))
        } else {
            Self(Duration::from_secs(seconds))
        }
    }

    /// A lifetime from seconds; zero or negative is refused.
    pub fn from_secs(seconds: i64) -> Result<Self, TtlError> {
        u64::try_from(seconds)
            .ok()
            .filter(|s| *s > 0)
            .map(|s| Self(Duration::from_secs(s)))
            .ok_or(TtlError::NotPositive { seconds })
    }

    /// A lifetime from a [`Duration`], truncated to whole seconds; below one
    /// second is refused.
    pub fn from_duration(d: Duration) -> Result<Self, TtlError> {
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Self::from_secs(secs)
    }

    /// The lifetime as a [`Duration`].
    pub fn as_duration(self) -> Duration {
        self.0
    }

    /// The lifetime in seconds.
    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }
}

impl fmt::Debug for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ttl({})", humantime::format_duration(self.0))
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl FromStr for Ttl {
    type Err = TtlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d = humantime::parse_duration(s.trim()).map_err(|e| TtlError::Unparsable {
            input: s.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_duration(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_zero_and_negative() {
        assert_eq!(Ttl::from_secs(0), Err(TtlError::NotPositive { seconds: 0 }));
        assert_eq!(
            Ttl::from_secs(-5),
            Err(TtlError::NotPositive { seconds: -5 })
        );
        assert_eq!(
            "0s".parse::<Ttl>(),
            Err(TtlError::NotPositive { seconds: 0 })
        );
        assert_eq!(Ttl::from_secs(1).unwrap().as_secs(), 1);
    }

    #[test]
    fn parses_human_durations() {
        assert_eq!("1h".parse::<Ttl>().unwrap().as_secs(), 3600);
        assert_eq!("90d".parse::<Ttl>().unwrap().as_secs(), 90 * 86400);
        assert_eq!("1h".parse::<Ttl>().unwrap().to_string(), "1h");
        assert!(matches!(
            "soon".parse::<Ttl>(),
            Err(TtlError::Unparsable { .. })
        ));
        assert!(matches!(
            "-1h".parse::<Ttl>(),
            Err(TtlError::Unparsable { .. })
        ));
    }
}
