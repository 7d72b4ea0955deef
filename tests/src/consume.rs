//! Scenarios for the consuming surface (issue 5).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

/// This module's scenarios, for [`scenarios!`](macro@crate::scenarios).
#[macro_export]
macro_rules! consume_scenarios {
    ($block_on:path, $runtime:expr) => {
        $crate::scenarios!($block_on, $runtime;);
    };
}
