//! Feeding this process's stdin into a request stream (`exec -i`, `attach`
//! to an app with a stdin): each read becomes one message, and end of file
//! one closing message.

use tokio::io::AsyncReadExt;
use ttrpc::r#async::CSSender;

/// Copies stdin to `tx` until end of file (then sends `close()`) or until
/// the stream is gone. `data` wraps a chunk in the stream's message type.
pub async fn pump<T>(tx: CSSender<T>, data: impl Fn(Vec<u8>) -> T, close: impl Fn() -> T)
where
    T: ttrpc::proto::Codec,
    <T as ttrpc::proto::Codec>::E: std::fmt::Display,
{
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(&close()).await;
                return;
            }
            Ok(n) => {
                if tx.send(&data(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}
