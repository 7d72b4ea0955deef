//! The hand-written lists that `reply_ids` and `client_may_send` replaced,
//! kept only to check the generated ones against.

use super::*;

/// The `(class_id, method_id)` pairs that answer `method` when a client sends
/// it, or `None` when it gets no reply (asynchronous methods, and `no_wait`).
///
/// `basic.get` has two possible answers; every other method has one.
pub(super) fn reply_ids(method: &Method) -> Option<&'static [(u16, u16)]> {
    macro_rules! one {
        ($t:ty) => {
            Some(&[(<$t>::CLASS_ID, <$t>::METHOD_ID)])
        };
    }
    macro_rules! unless_no_wait {
        ($m:expr, $t:ty) => {
            if $m.no_wait { None } else { one!($t) }
        };
    }
    match method {
        Method::ConnectionStartOk(_) => one!(ConnectionTune),
        Method::ConnectionSecureOk(_) => one!(ConnectionTune),
        Method::ConnectionOpen(_) => one!(ConnectionOpenOk),
        Method::ConnectionClose(_) => one!(ConnectionCloseOk),
        Method::ConnectionUpdateSecret(_) => one!(ConnectionUpdateSecretOk),
        Method::ChannelOpen(_) => one!(ChannelOpenOk),
        Method::ChannelFlow(_) => one!(ChannelFlowOk),
        Method::ChannelClose(_) => one!(ChannelCloseOk),
        Method::ExchangeDeclare(m) => unless_no_wait!(m, ExchangeDeclareOk),
        Method::ExchangeDelete(m) => unless_no_wait!(m, ExchangeDeleteOk),
        Method::ExchangeBind(m) => unless_no_wait!(m, ExchangeBindOk),
        Method::ExchangeUnbind(m) => unless_no_wait!(m, ExchangeUnbindOk),
        Method::QueueDeclare(m) => unless_no_wait!(m, QueueDeclareOk),
        Method::QueueBind(m) => unless_no_wait!(m, QueueBindOk),
        Method::QueuePurge(m) => unless_no_wait!(m, QueuePurgeOk),
        Method::QueueDelete(m) => unless_no_wait!(m, QueueDeleteOk),
        Method::QueueUnbind(_) => one!(QueueUnbindOk),
        Method::BasicQos(_) => one!(BasicQosOk),
        Method::BasicConsume(m) => unless_no_wait!(m, BasicConsumeOk),
        Method::BasicCancel(m) => unless_no_wait!(m, BasicCancelOk),
        Method::BasicGet(_) => Some(&[
            (BasicGetOk::CLASS_ID, BasicGetOk::METHOD_ID),
            (BasicGetEmpty::CLASS_ID, BasicGetEmpty::METHOD_ID),
        ]),
        Method::BasicRecover(_) => one!(BasicRecoverOk),
        Method::ConfirmSelect(m) => unless_no_wait!(m, ConfirmSelectOk),
        Method::TxSelect(_) => one!(TxSelectOk),
        Method::TxCommit(_) => one!(TxCommitOk),
        Method::TxRollback(_) => one!(TxRollbackOk),
        _ => None,
    }
}

/// Whether a client may send this method through the generic `call`/`send`
/// commands: connection-class and channel open/close methods have commands
/// of their own, publishes need content, and server-only methods are refused.
pub(super) fn client_may_send(method: &Method) -> bool {
    matches!(
        method,
        Method::ChannelFlow(_)
            | Method::ChannelFlowOk(_)
            | Method::ExchangeDeclare(_)
            | Method::ExchangeDelete(_)
            | Method::ExchangeBind(_)
            | Method::ExchangeUnbind(_)
            | Method::QueueDeclare(_)
            | Method::QueueBind(_)
            | Method::QueuePurge(_)
            | Method::QueueDelete(_)
            | Method::QueueUnbind(_)
            | Method::BasicQos(_)
            | Method::BasicConsume(_)
            | Method::BasicCancel(_)
            | Method::BasicGet(_)
            | Method::BasicAck(_)
            | Method::BasicReject(_)
            | Method::BasicRecoverAsync(_)
            | Method::BasicRecover(_)
            | Method::BasicNack(_)
            | Method::ConfirmSelect(_)
            | Method::TxSelect(_)
            | Method::TxCommit(_)
            | Method::TxRollback(_)
    )
}
