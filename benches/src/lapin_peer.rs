//! What the lapin programs share, written the way lapin's examples do it.

use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};

/// A connection to `url`, a publishing channel in confirm mode and the
/// name of a server-named exclusive queue.
pub async fn publishing(url: &str) -> (Connection, Channel, lapin::types::ShortString) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let publisher = connection.create_channel().await.expect("channel");
    let queue = publisher
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue.declare")
        .name()
        .clone();
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    (connection, publisher, queue)
}
