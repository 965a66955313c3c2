//! `.timer N [ms|s|secs|m|min]`: waits, without holding a thread (a bare number is seconds).

use std::time::Duration;

use crate::call::PluginError;
use crate::context::Context;
use crate::plugin::{run_fn, InputError, Invocation, PluginSpec};

pub const SPEC: PluginSpec = PluginSpec::new(
    "timer",
    "wait for a duration: `.timer 100 ms`, `.timer 2` (seconds)",
)
.input("a duration such as `2 s` or `100 ms`")
.check(|input| parse_duration(input).map(drop))
.run(run_fn!(run));

/// Parses `100 ms`, `100ms`, `2`, `2 s`, `1.5 secs`, `3 min`.
pub fn parse_duration(text: &str) -> Result<Duration, InputError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| {
        InputError::new(format!("`{text}` is not a duration"))
            .hint("write a number and a unit: `.timer 100 ms`, `.timer 2 s`, `.timer 1 min`")
    })?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "ms" | "millis" | "milliseconds" => 0.001,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        other => {
            return Err(
                InputError::new(format!("unknown time unit `{other}`")).hint("use ms, s, min or h")
            )
        }
    };
    let secs = number * scale;
    if !secs.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(InputError::new(format!("`{text}` is out of range")));
    }
    Ok(Duration::from_secs_f64(secs))
}

async fn run(call: &Invocation, _cx: &mut Context) -> Result<(), PluginError> {
    let wait = parse_duration(&call.input).map_err(|e| PluginError::failed(call, e.message))?;
    tokio::time::sleep(wait).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(
            parse_duration("100 ms").unwrap(),
            Duration::from_millis(100)
        );
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(
            parse_duration("1.5 secs").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("1 min").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("1e400").is_err());
    }
}
