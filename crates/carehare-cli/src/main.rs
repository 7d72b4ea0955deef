//! `carehare`: a RabbitMQ command-line tool.

fn main() {}
