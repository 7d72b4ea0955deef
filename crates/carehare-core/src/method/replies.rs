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
