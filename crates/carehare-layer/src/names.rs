//! Channel and group names, checked like Django Channels'
//! `BaseChannelLayer` does, and the random names the layer makes.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Error;

/// Django Channels' `MAX_NAME_LENGTH`: names must be shorter.
pub(crate) const MAX_NAME_LENGTH: usize = 100;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Python's `\w` in a `str` pattern: Unicode letters, digits and `_`.
fn is_local_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// A group name: `^[a-zA-Z\d\-_.]+$`, shorter than 100 characters.
pub(crate) fn check_group(name: &str) -> Result<(), Error> {
    if !name.is_empty() && name.chars().count() < MAX_NAME_LENGTH && name.chars().all(is_name_char)
    {
        Ok(())
    } else {
        Err(Error::InvalidGroupName(name.to_string()))
    }
}

/// A specific channel name, `<queue>!<local>`: Django Channels'
/// `^[a-zA-Z\d\-_.]+(\![\d\w\-_.]*)?$`, shorter than 100 characters, and
/// with the `!` (the layer has no "normal channels"). Returns the queue.
pub(crate) fn check_channel(name: &str) -> Result<&str, Error> {
    let invalid = || Error::InvalidChannelName(name.to_string());
    if name.chars().count() >= MAX_NAME_LENGTH {
        return Err(invalid());
    }
    let Some((queue, local)) = name.split_once('!') else {
        return Err(invalid());
    };
    if queue.is_empty() || !queue.chars().all(is_name_char) || !local.chars().all(is_local_char) {
        return Err(invalid());
    }
    Ok(queue)
}

/// `n` random ASCII letters, like Python's `_random_letters`.
pub(crate) fn random_letters(n: usize) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(n);
    while out.len() < n {
        // std's `RandomState` is seeded from the OS's randomness.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut bits = hasher.finish();
        // 52 letters: take 5 letters from each 64-bit draw (52^5 < 2^29).
        for _ in 0..5 {
            if out.len() == n {
                break;
            }
            out.push(char::from(LETTERS[(bits % 52) as usize]));
            bits /= 52;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        assert_eq!(check_channel("channels_abc!def").ok(), Some("channels_abc"));
        assert_eq!(check_channel("a.b-c_d!").ok(), Some("a.b-c_d"));
        assert_eq!(check_channel("q!héllo_1").ok(), Some("q"));
        for bad in [
            "",
            "no-bang",
            "!local",
            "q!a!b",
            "q!sp ace",
            "qué!x",
            "q!x/y",
            &format!("q!{}", "x".repeat(98)),
        ] {
            assert!(
                matches!(check_channel(bad), Err(Error::InvalidChannelName(n)) if n == bad),
                "{bad}"
            );
        }
        assert!(check_channel(&format!("q!{}", "x".repeat(97))).is_ok());
    }

    #[test]
    fn group_names() {
        assert!(check_group("room-1.a_b").is_ok());
        assert!(check_group(&"g".repeat(99)).is_ok());
        for bad in ["", "a!b", "a b", "é", &"g".repeat(100)] {
            assert!(
                matches!(check_group(bad), Err(Error::InvalidGroupName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn random_letters_are_letters_and_differ() {
        let a = random_letters(12);
        let b = random_letters(12);
        assert_eq!(a.len(), 12);
        assert!(a.chars().all(|c| c.is_ascii_alphabetic()));
        assert_ne!(a, b);
    }
}
