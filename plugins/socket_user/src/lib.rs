//! Misbehaving validator: `validate` opens a TCP connection, so the component
//! imports `wasi:sockets`. The host refuses it at upload; it is never run.

use sluice_sdk::{Action, Job, Rejection, State, validator};

struct SocketUser;

impl validator::Validator for SocketUser {
    fn validate(_job: &Job, _action: Action, _from: State, _to: State) -> Result<(), Rejection> {
        match std::net::TcpStream::connect("127.0.0.1:9") {
            Ok(_) => Err(Rejection::new("SOCKET_RESULT", "connected to 127.0.0.1:9")),
            Err(e) => Err(Rejection::new("SOCKET_RESULT", format!("connect failed: {e}"))),
        }
    }
}

sluice_sdk::export_validator!(SocketUser);
