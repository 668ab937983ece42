//! The claim of a VM from the warm pool.
//!
//! A pooled VM boots with [`crate::layout::POOL_ENV`] set and no pod: its
//! agent loads the kernel modules, mounts the guest's own file systems and
//! waits on [`crate::layout::CLAIM_VSOCK_PORT`]. The host writes the pod's
//! share (settings, manifest, layers; host volumes bound into the volumes
//! share), then connects and sends [`CLAIM`]; the agent answers [`CLAIMED`]
//! and boots the pod as a cold VM would from the moment it read its share.
//! Anything else on that port is dropped, and the agent keeps waiting, so
//! a stray connection cannot start a pod from a half-written share.

/// What the host sends once the pod's share is complete.
pub const CLAIM: &[u8] = b"kvmpod-claim-v1\n";
/// The agent's answer: it reads the share next.
pub const CLAIMED: &[u8] = b"claimed\n";

/// Whether `got` (what came on the claim port) is a claim.
pub fn is_claim(got: &[u8]) -> bool {
    got == CLAIM
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_whole_claim_counts() {
        assert!(is_claim(CLAIM));
        assert!(!is_claim(&CLAIM[..CLAIM.len() - 1]));
        assert!(!is_claim(b"GET / HTTP/1.0\r\n"));
    }
}
