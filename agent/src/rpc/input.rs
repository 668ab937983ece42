//! Reading what the host sends on an exec or attach connection (stdin,
//! its end, resizes, signals), for both kinds of session.

use std::io;

use kvmpod_api::iostream::{self as wire, HEADER_LEN};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::RpcError;

/// The host's next frame, with its data (if any) in `data`; None when the
/// host is gone (end of file: the host never half-closes).
pub(super) async fn read_input<R: AsyncRead + Unpin>(
    r: &mut R,
    data: &mut Vec<u8>,
) -> Result<Option<wire::Input>, RpcError> {
    let mut h = [0u8; HEADER_LEN];
    match r.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let frame = wire::Input::decode(&h)?;
    data.clear();
    if let wire::Input::Stdin(len) = frame {
        data.resize(len as usize, 0);
        r.read_exact(data).await?;
    }
    Ok(Some(frame))
}
