//! Parsing `key=value` flags into AMQP field tables, and durations.

use std::time::Duration;

use carehare_tokio::carehare_core::types::{LongString, ShortString};
use carehare_tokio::{AMQPValue, FieldTable};

use crate::error::CliError;

/// How an untyped value (`key=value`) is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Untyped {
    /// Always a string (message headers: application data).
    String,
    /// An integer if it parses as one, `true`/`false` as a boolean, else a
    /// string (queue and consumer arguments, which RabbitMQ wants typed:
    /// `x-max-length=1000`, `x-queue-type=quorum`).
    Infer,
}

/// Parses `key=value` or `key:TYPE=value` pairs into a table.
///
/// A `:TYPE` suffix on the key picks the value's type (`count:int=5`);
/// a key whose suffix after `:` is not a known type keeps its colon.
pub(crate) fn table(pairs: &[String], untyped: Untyped) -> Result<FieldTable, CliError> {
    let mut table = FieldTable::default();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("expected key=value, got {pair:?}")))?;
        let (key, value) = match key.rsplit_once(':') {
            Some((k, ty)) if is_type(ty) => (k, typed(ty, value)?),
            _ => (key, untyped_value(value, untyped)),
        };
        if key.is_empty() {
            return Err(CliError::usage(format!("empty key in {pair:?}")));
        }
        let key = ShortString::try_new(key)
            .map_err(|_| CliError::usage(format!("key longer than 255 bytes in {pair:?}")))?;
        table.insert(key, value);
    }
    Ok(table)
}

fn is_type(ty: &str) -> bool {
    matches!(ty, "str" | "int" | "float" | "bool" | "timestamp")
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn typed(ty: &str, value: &str) -> Result<AMQPValue, CliError> {
    let bad = || CliError::usage(format!("{value:?} is not a valid {ty}"));
    Ok(match ty {
        "int" => AMQPValue::LongLongInt(value.parse().map_err(|_| bad())?),
        "float" => AMQPValue::Double(value.parse().map_err(|_| bad())?),
        "bool" => AMQPValue::Boolean(value.parse().map_err(|_| bad())?),
        "timestamp" => AMQPValue::Timestamp(value.parse().map_err(|_| bad())?),
        _ => long_string(value),
    })
}

fn untyped_value(value: &str, untyped: Untyped) -> AMQPValue {
    if untyped == Untyped::Infer {
        if let Ok(n) = value.parse::<i64>() {
            return AMQPValue::LongLongInt(n);
        }
        if let Ok(b) = value.parse::<bool>() {
            return AMQPValue::Boolean(b);
        }
    }
    long_string(value)
}

/// Parses a duration: seconds (`5`, `0.5`) or with a unit (`250ms`, `10s`,
/// `2m`).
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 5, 0.5, 250ms, 10s, 2m)"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("{s:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_strings_unless_typed() {
        let t = table(
            &[
                "a=1".into(),
                "b:int=-5".into(),
                "c:bool=true".into(),
                "d:float=1.5".into(),
                "e:timestamp=1700000000".into(),
                "x:y=z".into(),
                "f:str=7".into(),
            ],
            Untyped::String,
        )
        .unwrap();
        let t = t.inner();
        assert_eq!(t.get("a"), Some(&long_string("1")));
        assert_eq!(t.get("b"), Some(&AMQPValue::LongLongInt(-5)));
        assert_eq!(t.get("c"), Some(&AMQPValue::Boolean(true)));
        assert_eq!(t.get("d"), Some(&AMQPValue::Double(1.5)));
        assert_eq!(t.get("e"), Some(&AMQPValue::Timestamp(1_700_000_000)));
        assert_eq!(t.get("x:y"), Some(&long_string("z")));
        assert_eq!(t.get("f"), Some(&long_string("7")));
    }

    #[test]
    fn arguments_are_inferred() {
        let t = table(
            &["x-max-length=10".into(), "x-queue-type=quorum".into()],
            Untyped::Infer,
        )
        .unwrap();
        assert_eq!(
            t.inner().get("x-max-length"),
            Some(&AMQPValue::LongLongInt(10))
        );
        assert_eq!(t.inner().get("x-queue-type"), Some(&long_string("quorum")));
    }

    #[test]
    fn bad_pairs_are_usage_errors() {
        for bad in ["novalue", "=v", "n:int=x", "b:bool=yes"] {
            let e = table(&[bad.into()], Untyped::String).unwrap_err();
            assert!(matches!(e, CliError::Usage(_)), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(duration("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert!(duration("soon").is_err());
        assert!(duration("-1").is_err());
    }
}
