//! Starting a process the way `posix_spawn` does: `clone` with `CLONE_VM |
//! CLONE_VFORK`. The child runs on a stack of its own in the agent's
//! memory, and the calling thread waits until it has called `execve` (or
//! exited). Nothing of the agent's address space is copied, and the agent
//! takes no copy-on-write faults afterwards: with `fork`, those cost the 64
//! × 16 pod more per app than the whole fork-to-exec of a bare C init
//! (`make bench`, section limit).
//!
//! The price: until `execve` the child shares every byte with the agent's
//! other threads, which keep running. It must neither allocate nor take a
//! lock nor call a libc function that acts on every thread of the process
//! (musl's `setuid`, `setgid` and `setgroups` signal the threads on its
//! thread list, which are the agent's): only system calls, on data prepared
//! before the clone. `ChildSetup` (in `spawn`) and `Isolation` keep to that.

use std::ffi::CString;
use std::io;
use std::os::raw::{c_char, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::sys::mman::{mmap_anonymous, mprotect, munmap, MapFlags, ProtFlags};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

/// The child's stack. Its work is a few dozen system calls with small
/// frames; a guard page below it turns an overflow into a fault rather
/// than a write into the agent's memory.
const STACK_SIZE: usize = 256 * 1024;
const GUARD_SIZE: usize = 4096;

/// A program and its argument and environment vectors, as `execve` takes
/// them.
#[derive(Debug)]
pub struct Exec {
    program: CString,
    /// Owns the strings `argv` and `envp` point into.
    _strings: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
}

// SAFETY: the pointers in `argv` and `envp` point into `_strings`, which
// `Exec` owns and never changes; moving an `Exec` to another thread moves
// them together.
unsafe impl Send for Exec {}

impl Exec {
    /// `program` run with `argv` (its first element is the process's name)
    /// and the environment `env`. Refuses strings with a NUL byte.
    pub fn new<'a>(
        program: &str,
        argv: impl IntoIterator<Item = &'a str>,
        env: impl IntoIterator<Item = String>,
    ) -> Result<Exec, NulError> {
        let program = CString::new(program).map_err(|_| NulError::Program)?;
        let args = argv
            .into_iter()
            .map(|a| CString::new(a).map_err(|_| NulError::Argument))
            .collect::<Result<Vec<_>, _>>()?;
        let vars = env
            .into_iter()
            .map(|v| CString::new(v).map_err(|_| NulError::Environment))
            .collect::<Result<Vec<_>, _>>()?;
        let pointers = |strings: &[CString]| -> Vec<*const c_char> {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(ptr::null()))
                .collect()
        };
        let argv = pointers(&args);
        let envp = pointers(&vars);
        let mut strings = args;
        strings.extend(vars);
        Ok(Exec {
            program,
            _strings: strings,
            argv,
            envp,
        })
    }
}

/// Which string of an [`Exec`] held a NUL byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NulError {
    Program,
    Argument,
    Environment,
}

/// What the child runs between the clone and `execve`. It must keep to
/// the rules in the module docs.
pub trait BeforeExec {
    fn run(&self) -> io::Result<()>;
}

/// What the child needs, on the calling thread's stack for the clone.
struct Child<'a> {
    exec: &'a Exec,
    stdio: [Option<c_int>; 3],
    setup: &'a dyn BeforeExec,
    /// The errno of the child's failure, 0 when it reached `execve`.
    failed: AtomicI32,
}

/// Starts `exec` with `stdio` as its descriptors 0, 1 and 2 (`None`: the
/// agent's own), after `setup`; returns its pid once it has called
/// `execve`. Its exit is reported by SIGCHLD, as a forked child's. When
/// anything before `execve` fails, the child is reaped here and the error
/// returned, so the caller must hold off other reapers (the `Reaper`'s
/// lock does).
///
/// Each descriptor in `stdio` must be 3 or above (so that setting up one
/// cannot close another); it is inherited without `O_CLOEXEC`.
pub fn spawn(exec: &Exec, stdio: [Option<c_int>; 3], setup: &dyn BeforeExec) -> io::Result<Pid> {
    if stdio.iter().flatten().any(|fd| *fd < 3) {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    let stack = Stack::new()?;
    let child = Child {
        exec,
        stdio,
        setup,
        failed: AtomicI32::new(0),
    };
    let pid = with_signals_blocked(|| {
        // SAFETY: `child_main` runs on `stack`, which stays mapped until
        // the child has exec'd or exited (CLONE_VFORK holds this thread
        // until then); it reads `child`, which lives on this thread's
        // stack for as long, and makes only the calls the module docs
        // allow.
        unsafe {
            libc::clone(
                child_main,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                &child as *const Child as *mut c_void,
            )
        }
    });
    drop(stack);
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let pid = Pid::from_raw(pid);
    match child.failed.load(Ordering::SeqCst) {
        0 => Ok(pid),
        errno => {
            // It has exited: its status is nobody else's.
            let _ = waitpid(pid, None);
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// Runs `f` with every signal blocked on this thread, so that no handler
/// of the agent's runs in the child before it has reset them.
fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset_t is plain data that sigfillset initialises;
    // pthread_sigmask only changes this thread's mask, restored below.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let r = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        r
    }
}

/// The child: default signal dispositions and an empty mask (what a
/// process expects at its start, and `SIGPIPE` no longer ignored as in the
/// agent), its stdio, `setup`, then `execve`. It never returns.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Child` that `spawn` passed, alive until this
    // process execs or exits.
    let child = unsafe { &*(arg as *const Child) };
    let errno = match prepare(child) {
        // SAFETY: the pointer arrays are NUL-terminated and point into
        // strings the `Exec` owns.
        Ok(()) => unsafe {
            libc::execve(
                child.exec.program.as_ptr(),
                child.exec.argv.as_ptr(),
                child.exec.envp.as_ptr(),
            );
            Errno::last_raw()
        },
        Err(e) => e.raw_os_error().unwrap_or(libc::EINVAL),
    };
    child.failed.store(errno.max(1), Ordering::SeqCst);
    // SAFETY: _exit ends this process without running anything of the
    // agent's (no atexit handlers, no buffers flushed).
    unsafe { libc::_exit(127) }
}

fn prepare(child: &Child) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask; these
    // calls change this process's dispositions and mask only (without
    // CLONE_SIGHAND the child has its own table).
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..=libc::SIGRTMAX() {
            // SIGKILL and SIGSTOP cannot change; SIGABRT's would take a
            // lock in musl; 32-34 are musl's own and refused.
            if matches!(sig, libc::SIGKILL | libc::SIGSTOP | libc::SIGABRT)
                || (32..=34).contains(&sig)
            {
                continue;
            }
            libc::sigaction(sig, &dfl, ptr::null_mut());
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        if libc::sigprocmask(libc::SIG_SETMASK, &none, ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    for (target, fd) in child.stdio.iter().enumerate() {
        if let Some(fd) = fd {
            // SAFETY: dup2 on descriptors this process holds.
            if unsafe { libc::dup2(*fd, target as c_int) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    child.setup.run()
}

/// An anonymous mapping for the child's stack, with a guard page below.
struct Stack {
    base: ptr::NonNull<c_void>,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        let len = std::num::NonZeroUsize::new(STACK_SIZE + GUARD_SIZE)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a fresh private anonymous mapping, which nothing else
        // refers to; the guard page is its lowest.
        unsafe {
            let base = mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_STACK,
            )?;
            if let Err(e) = mprotect(base, GUARD_SIZE, ProtFlags::PROT_NONE) {
                let _ = munmap(base, STACK_SIZE + GUARD_SIZE);
                return Err(e.into());
            }
            Ok(Stack { base })
        }
    }

    /// The stack's top (it grows down), 16-byte aligned.
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of the mapping, as clone takes it.
        unsafe { self.base.as_ptr().cast::<u8>().add(GUARD_SIZE + STACK_SIZE) }.cast()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours, and the child that used it has
        // exec'd or exited.
        let _ = unsafe { munmap(self.base, STACK_SIZE + GUARD_SIZE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    struct Nothing;
    impl BeforeExec for Nothing {
        fn run(&self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Fails;
    impl BeforeExec for Fails {
        fn run(&self) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(libc::EPERM))
        }
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        // Above 2, as spawn requires (the test harness may have closed 0).
        let up = |fd: OwnedFd| {
            let n = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10)).unwrap();
            // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor we own.
            unsafe { OwnedFd::from_raw_fd(n) }
        };
        (up(r), up(w))
    }

    #[test]
    fn a_child_gets_its_argv_env_and_stdout_and_default_signals() {
        let (r, w) = pipe();
        let exec = Exec::new(
            "/bin/sh",
            [
                "sh",
                "-c",
                "echo $0 $1 $GREETING; grep SigIgn /proc/self/status",
                "zero",
                "one",
            ],
            ["GREETING=hi".to_string()],
        )
        .unwrap();
        let pid = spawn(&exec, [None, Some(w.as_raw_fd()), None], &Nothing).unwrap();
        drop(w);
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        let status = waitpid(pid, None).unwrap();
        assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("zero one hi"));
        // SIGPIPE is no longer ignored (Rust ignores it in the agent; this
        // test process too), nor is any other signal the child could
        // reset (a C library may keep its own, 32 and 33, aside).
        let ignored = lines
            .next()
            .and_then(|l| l.strip_prefix("SigIgn:\t"))
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .expect("a SigIgn line");
        let resettable = !(0b11u64 << 31);
        assert_eq!(ignored & resettable, 0, "{out}");
    }

    #[test]
    fn failures_before_exec_are_returned_and_reaped() {
        let exec = Exec::new("/nonexistent/program", ["x"], []).unwrap();
        let e = spawn(&exec, [None, None, None], &Nothing).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let sh = Exec::new("/bin/sh", ["sh", "-c", "exit 0"], []).unwrap();
        let e = spawn(&sh, [None, None, None], &Fails).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert!(spawn(&sh, [Some(1), None, None], &Nothing).is_err());
        assert_eq!(Exec::new("a\0b", ["a"], []).unwrap_err(), NulError::Program);
        assert_eq!(
            Exec::new("/bin/sh", ["sh"], ["A=\0".to_string()]).unwrap_err(),
            NulError::Environment
        );
    }
}
