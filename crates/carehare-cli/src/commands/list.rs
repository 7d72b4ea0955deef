//! `carehare list queues|exchanges|connections`: what the management HTTP
//! API knows of the URL's vhost, as a table or as JSON.

use std::io::Write;

use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::common::ConnArgs;
use crate::error::CliError;
use crate::management::Management;

/// What to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum What {
    /// Queues: name, type, messages (ready, unacked), consumers.
    Queues,
    /// Exchanges: name, type, durable, auto-delete, internal.
    Exchanges,
    /// Client connections: name, user, peer, state, channels.
    Connections,
}

/// Lists the vhost's queues, exchanges or connections through RabbitMQ's
/// management HTTP API (the management plugin must be on). It is found
/// from the AMQP URL: same host, port 15672 (15671, HTTPS, for amqps://),
/// same user and password; --management-url overrides. Message counts are
/// RabbitMQ's statistics, refreshed every few seconds.
///
/// Exit codes: 3 when the API can't be reached or refuses the login, 4
/// when it has no such vhost.
#[derive(Args, Debug)]
pub(crate) struct ListArgs {
    /// What to list.
    #[arg(value_enum)]
    pub what: What,
    /// The management API, e.g. http://admin:secret@rabbit:15672 (a user
    /// and password here win over the AMQP URL's).
    #[arg(long, value_name = "URL", env = "CAREHARE_MANAGEMENT_URL")]
    pub management_url: Option<String>,
    /// Print the API's objects, every field, as one JSON array.
    #[arg(long)]
    pub json: bool,
}

/// A table column: its header, and where its value is in an object (a
/// JSON pointer). A missing or null value shows as `-`.
struct Column {
    header: &'static str,
    at: &'static str,
    /// Shown for an empty string, if not empty itself.
    if_empty: &'static str,
}

const fn col(header: &'static str, at: &'static str) -> Column {
    Column {
        header,
        at,
        if_empty: "",
    }
}

impl Column {
    fn read(&self, v: &Value) -> String {
        match v.pointer(self.at) {
            None | Some(Value::Null) => "-".into(),
            Some(Value::String(s)) if s.is_empty() && !self.if_empty.is_empty() => {
                self.if_empty.into()
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        }
    }
}

const QUEUES: &[Column] = &[
    col("name", "/name"),
    col("type", "/type"),
    col("messages", "/messages"),
    col("ready", "/messages_ready"),
    col("unacked", "/messages_unacknowledged"),
    col("consumers", "/consumers"),
];

const EXCHANGES: &[Column] = &[
    // As the management UI shows the default exchange.
    Column {
        if_empty: "(AMQP default)",
        ..col("name", "/name")
    },
    col("type", "/type"),
    col("durable", "/durable"),
    col("auto_delete", "/auto_delete"),
    col("internal", "/internal"),
];

const CONNECTIONS: &[Column] = &[
    col("name", "/name"),
    col("client name", "/client_properties/connection_name"),
    col("user", "/user"),
    col("state", "/state"),
    col("channels", "/channels"),
];

/// Runs `list` (blocking: one HTTP request).
pub(crate) fn run(conn: &ConnArgs, args: &ListArgs) -> Result<(), CliError> {
    let api = Management::new(conn, args.management_url.as_deref())?;
    let (path, columns) = match args.what {
        What::Queues => (api.in_vhost("queues"), QUEUES),
        What::Exchanges => (api.in_vhost("exchanges"), EXCHANGES),
        What::Connections => (api.of_vhost("connections"), CONNECTIONS),
    };
    let items = api.get(&path)?;
    let text = if args.json {
        format!("{items}\n")
    } else {
        let rows: Vec<Vec<String>> = items
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|item| columns.iter().map(|c| c.read(item)).collect())
                    .collect()
            })
            .unwrap_or_default();
        table(columns, &rows)
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::io("writing to stdout"))
}

/// Aligned columns, two spaces apart, under their headers; numbers to the
/// right.
fn table(columns: &[Column], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([c.header.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let numeric: Vec<bool> = (0..columns.len())
        .map(|i| {
            rows.iter()
                .all(|r| r[i] == "-" || r[i].parse::<f64>().is_ok())
                && !rows.is_empty()
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i > 0 {
                out += "  ";
            }
            if numeric[i] {
                out += &" ".repeat(pad);
                out += cell;
            } else {
                out += cell;
                if i + 1 < cells.len() {
                    out += &" ".repeat(pad);
                }
            }
        }
        out + "\n"
    };
    let mut out = line(columns.iter().map(|c| c.header).collect());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_numbers_go_right() {
        let items = [
            json!({"name": "orders", "type": "classic", "messages": 12, "messages_ready": 10,
                   "messages_unacknowledged": 2, "consumers": 1}),
            json!({"name": "q", "type": "quorum"}),
        ];
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|i| QUEUES.iter().map(|c| c.read(i)).collect())
            .collect();
        assert_eq!(
            table(QUEUES, &rows),
            "\
name    type     messages  ready  unacked  consumers
orders  classic        12     10        2          1
q       quorum          -      -        -          -
"
        );
        let default = json!({"name": "", "type": "direct", "durable": true});
        assert_eq!(EXCHANGES[0].read(&default), "(AMQP default)");
    }
}
