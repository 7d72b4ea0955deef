//! Which reply completes a client method, and which methods the generic
//! `call`/`send` commands accept: both read from the `[..]` annotation
//! each method carries in the `methods!` table, so a new method cannot be
//! left out of them.
//!
//! The annotation, after the method's name:
//!
//! - `[send]`: `call`/`send` accept it, and it gets no reply;
//! - `[send -> Reply]`: accepted, answered by `Reply`;
//! - `[core -> Reply]`: answered by `Reply`, but only the core's own
//!   commands send it (connection methods, `channel.open`/`close`);
//! - `-> A | B`: either answers it (`basic.get`);
//! - `-> Reply unless no_wait`: no reply when its `no_wait` field is set.
//!
//! No annotation: the client never sends it through a command that waits,
//! and `call`/`send` refuse it (server methods, `basic.publish`, which
//! needs content, and the core's own answers such as `close-ok`).

/// The reply ids an annotation gives `$m`, a method struct.
macro_rules! reply_ids_of {
    ($m:ident;) => {
        None
    };
    ($m:ident; $kind:ident) => {
        None
    };
    ($m:ident; $kind:ident -> $reply:ident unless $flag:ident) => {
        if $m.$flag {
            None
        } else {
            Some(&[(<$reply>::CLASS_ID, <$reply>::METHOD_ID)])
        }
    };
    ($m:ident; $kind:ident -> $($reply:ident)|+) => {
        Some(&[$((<$reply>::CLASS_ID, <$reply>::METHOD_ID)),+])
    };
}

/// Whether an annotation lets `call`/`send` take the method.
macro_rules! may_send_of {
    () => {
        false
    };
    (send $($rest:tt)*) => {
        true
    };
    (core $($rest:tt)*) => {
        false
    };
}

/// `Some(the method with no_wait set)` when `$t` has a `no_wait` field.
#[cfg(test)]
macro_rules! with_no_wait {
    ($t:ident;) => {
        None
    };
    ($t:ident; no_wait $($rest:ident)*) => {
        {
            // For a method whose only field is `no_wait` the update is empty.
            #[allow(clippy::needless_update)]
            let m = $t {
                no_wait: true,
                ..Default::default()
            };
            Some(Method::$t(m))
        }
    };
    ($t:ident; $first:ident $($rest:ident)*) => {
        with_no_wait!($t; $($rest)*)
    };
}

#[cfg(test)]
mod tests {
    use crate::method::{Method, client_may_send, every_method, reply_ids};

    /// One line per method a client may send or expects a reply to.
    fn describe(method: &Method, no_wait: Option<&Method>) -> Option<String> {
        let names = |m: &Method| match reply_ids(m) {
            None => "none".to_string(),
            Some(ids) => ids
                .iter()
                .map(|&(c, m)| Method::name_of(c, m).unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(" | "),
        };
        let send = client_may_send(method);
        if !send && reply_ids(method).is_none() {
            return None;
        }
        let mut line = format!(
            "{} {} -> {}",
            method.name(),
            if send { "send" } else { "core" },
            names(method)
        );
        if let Some(m) = no_wait {
            line += &format!(", no_wait -> {}", names(m));
        }
        Some(line)
    }

    /// What the hand-written lists said before the table's annotations
    /// replaced them (checked equal for every method and `no_wait` value
    /// when they were replaced). A change here must be meant.
    const EXPECTED: &str = "\
connection.start-ok core -> connection.tune
connection.secure-ok core -> connection.tune
connection.open core -> connection.open-ok
connection.close core -> connection.close-ok
connection.update-secret core -> connection.update-secret-ok
channel.open core -> channel.open-ok
channel.flow send -> channel.flow-ok
channel.flow-ok send -> none
channel.close core -> channel.close-ok
exchange.declare send -> exchange.declare-ok, no_wait -> none
exchange.delete send -> exchange.delete-ok, no_wait -> none
exchange.bind send -> exchange.bind-ok, no_wait -> none
exchange.unbind send -> exchange.unbind-ok, no_wait -> none
queue.declare send -> queue.declare-ok, no_wait -> none
queue.bind send -> queue.bind-ok, no_wait -> none
queue.purge send -> queue.purge-ok, no_wait -> none
queue.delete send -> queue.delete-ok, no_wait -> none
queue.unbind send -> queue.unbind-ok
basic.qos send -> basic.qos-ok
basic.consume send -> basic.consume-ok, no_wait -> none
basic.cancel send -> basic.cancel-ok, no_wait -> none
basic.get send -> basic.get-ok | basic.get-empty
basic.ack send -> none
basic.reject send -> none
basic.recover-async send -> none
basic.recover send -> basic.recover-ok
basic.nack send -> none
confirm.select send -> confirm.select-ok, no_wait -> none
tx.select send -> tx.select-ok
tx.commit send -> tx.commit-ok
tx.rollback send -> tx.rollback-ok
";

    #[test]
    fn reply_lists_are_unchanged() {
        let got: Vec<String> = every_method()
            .iter()
            .filter_map(|(m, no_wait)| describe(m, no_wait.as_ref()))
            .collect();
        let got = got.join("\n") + "\n";
        assert_eq!(got, EXPECTED, "got:\n{got}");
    }
}
