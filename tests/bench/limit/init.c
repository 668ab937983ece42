/*
 * The limit init: the least a guest's PID 1 can do for a pod, as bare
 * system calls, to measure the agent against (`make bench`, section
 * "limit"). It runs the plan in /limit.plan that the bench wrote for the
 * same pod the agent runs: one operation per line, fields separated by
 * tabs, "-" for an empty field. Timestamps are CLOCK_BOOTTIME, as the
 * agent's timeline; they go to the console as "limit: <name> <ns>".
 *
 *   insmod   PATH                      finit_module
 *   switchroot                         a tmpfs moved over / (as the agent)
 *   mkdir    PATH                      mkdir -p
 *   mount    SRC TARGET FSTYPE FLAGS DATA
 *   bind     SRC TARGET KIND           MS_BIND|MS_REC, the target made a
 *                                      "dir" or a "file" (the agent knows
 *                                      which, without a stat)
 *   robind   TARGET                    bind remount read-only
 *   mknod    PATH MAJOR MINOR MODE     a character device
 *   symlink  TARGET PATH
 *   write    PATH TEXT                 a file in one write; "\n" and "\t"
 *                                      for newline and tab
 *   read     PATH                      a file read whole
 *   vsock    PORT                      socket, bind, listen
 *   exec     ROOT PROGRAM              fork; the child chroots and execs;
 *                                      returns once the exec happened
 *   mark     NAME                      a timestamp, on the console now
 *                                      (as the agent prints its stages)
 *   stamp    NAME                      a timestamp kept in memory and
 *                                      printed at poweroff (as the agent
 *                                      keeps its apps' moments)
 *   wait                               every child reaped
 *   poweroff
 *
 * Any failure prints "limit: FATAL ..." and powers off.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_FIELDS 8

static int line_no;

static unsigned long long boottime_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_BOOTTIME, &t);
	return (unsigned long long)t.tv_sec * 1000000000ULL + t.tv_nsec;
}

static void mark(const char *name)
{
	dprintf(2, "limit: %s %llu\n", name, boottime_ns());
}

#define MAX_STAMPS 256
static struct {
	char name[64];
	unsigned long long ns;
} stamps[MAX_STAMPS];
static int n_stamps;

static void stamp(const char *name)
{
	if (n_stamps == MAX_STAMPS)
		return;
	snprintf(stamps[n_stamps].name, sizeof stamps[n_stamps].name, "%s", name);
	stamps[n_stamps++].ns = boottime_ns();
}

static void print_stamps(void)
{
	for (int i = 0; i < n_stamps; i++)
		dprintf(2, "limit: %s %llu\n", stamps[i].name, stamps[i].ns);
}

static void fatal(const char *fmt, ...)
{
	va_list ap;
	dprintf(2, "limit: FATAL at plan line %d: ", line_no);
	va_start(ap, fmt);
	vdprintf(2, fmt, ap);
	va_end(ap);
	dprintf(2, ": %s\n", strerror(errno));
	print_stamps();
	sync();
	reboot(RB_POWER_OFF);
	_exit(1);
}

static const char *opt(const char *s)
{
	return strcmp(s, "-") == 0 ? NULL : s;
}

static void mkdir_p(const char *path)
{
	char buf[4096];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0755) && errno != EEXIST)
			fatal("mkdir %s", buf);
		*p = '/';
	}
	if (mkdir(buf, 0755) && errno != EEXIST)
		fatal("mkdir %s", buf);
}

static void switch_root(void)
{
	static const char *dirs[] = { "dev", "proc", "sys", "run", "tmp", "mnt" };
	char p[64];
	if (mkdir("/newroot", 0755))
		fatal("mkdir /newroot");
	if (mount("root", "/newroot", "tmpfs", 0, "mode=0755"))
		fatal("mount /newroot");
	for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
		snprintf(p, sizeof p, "/newroot/%s", dirs[i]);
		if (mkdir(p, 0755))
			fatal("mkdir %s", p);
	}
	if (chdir("/newroot") || mount(".", "/", NULL, MS_MOVE, NULL) ||
	    chroot(".") || chdir("/"))
		fatal("moving the root");
}

static void bind_mount(const char *src, const char *target, const char *kind)
{
	if (!strcmp(kind, "dir")) {
		mkdir_p(target);
	} else {
		int fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		if (fd < 0)
			fatal("creating %s", target);
		close(fd);
	}
	if (mount(src, target, NULL, MS_BIND | MS_REC, NULL))
		fatal("bind %s %s", src, target);
}

static void ro_bind(const char *target)
{
	struct statvfs st;
	unsigned long flags = MS_REMOUNT | MS_BIND | MS_RDONLY;
	if (statvfs(target, &st))
		fatal("statvfs %s", target);
	if (st.f_flag & ST_NOSUID)
		flags |= MS_NOSUID;
	if (st.f_flag & ST_NODEV)
		flags |= MS_NODEV;
	if (st.f_flag & ST_NOEXEC)
		flags |= MS_NOEXEC;
	if (st.f_flag & ST_NOATIME)
		flags |= MS_NOATIME;
	if (mount(NULL, target, NULL, flags, NULL))
		fatal("remount %s read-only", target);
}

static void write_file(const char *path, const char *text)
{
	char buf[4096];
	size_t n = 0;
	for (const char *p = text; *p && n < sizeof buf; p++) {
		if (p[0] == '\\' && p[1] == 'n') {
			buf[n++] = '\n';
			p++;
		} else if (p[0] == '\\' && p[1] == 't') {
			buf[n++] = '\t';
			p++;
		} else {
			buf[n++] = *p;
		}
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		fatal("creating %s", path);
	/* One write: files in /proc take their value whole. */
	if (write(fd, buf, n) != (ssize_t)n)
		fatal("writing %s", path);
	close(fd);
}

static void read_file(const char *path)
{
	char buf[65536];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fatal("opening %s", path);
	while (read(fd, buf, sizeof buf) > 0)
		;
	close(fd);
}

static void listen_vsock(unsigned port)
{
	struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY,
				 .svm_port = port };
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 16))
		fatal("listening on vsock port %u", port);
}

/* fork; the child chroots into root and execs program; returns once the
 * exec happened (the pipe closes on exec), as a spawn that reports exec
 * failures must. */
static void exec_app(const char *root, const char *program)
{
	int p[2];
	char err = 0;
	if (pipe2(p, O_CLOEXEC))
		fatal("pipe");
	pid_t pid = fork();
	if (pid < 0)
		fatal("fork");
	if (pid == 0) {
		char *argv[] = { (char *)program, NULL };
		char *envp[] = { "PATH=/usr/bin:/bin", NULL };
		close(p[0]);
		if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
		    chdir(root) || syscall(SYS_pivot_root, ".", ".") || umount2(".", MNT_DETACH) ||
		    chdir("/"))
			_exit(126);
		execve(program, argv, envp);
		err = 1;
		(void)write(p[1], &err, 1);
		_exit(127);
	}
	close(p[1]);
	if (read(p[0], &err, 1) == 1)
		fatal("exec %s in %s", program, root);
	close(p[0]);
}

static void run(char **f, int n)
{
	const char *op = f[0];
	if (!strcmp(op, "insmod") && n == 2) {
		int fd = open(f[1], O_RDONLY | O_CLOEXEC);
		if (fd < 0 || syscall(SYS_finit_module, fd, "", 0))
			fatal("insmod %s", f[1]);
		close(fd);
	} else if (!strcmp(op, "switchroot")) {
		switch_root();
	} else if (!strcmp(op, "mkdir") && n == 2) {
		mkdir_p(f[1]);
	} else if (!strcmp(op, "mount") && n == 6) {
		mkdir_p(f[2]);
		if (mount(opt(f[1]), f[2], opt(f[3]), strtoul(f[4], NULL, 10), opt(f[5])))
			fatal("mount %s %s", f[3], f[2]);
	} else if (!strcmp(op, "bind") && n == 4) {
		bind_mount(f[1], f[2], f[3]);
	} else if (!strcmp(op, "robind") && n == 2) {
		ro_bind(f[1]);
	} else if (!strcmp(op, "mknod") && n == 5) {
		mode_t mode = strtoul(f[4], NULL, 8);
		if (mknod(f[1], S_IFCHR | mode, makedev(atoi(f[2]), atoi(f[3]))) ||
		    chmod(f[1], mode))
			fatal("mknod %s", f[1]);
	} else if (!strcmp(op, "symlink") && n == 3) {
		if (symlink(f[1], f[2]))
			fatal("symlink %s", f[2]);
	} else if (!strcmp(op, "write") && n == 3) {
		write_file(f[1], f[2]);
	} else if (!strcmp(op, "read") && n == 2) {
		read_file(f[1]);
	} else if (!strcmp(op, "vsock") && n == 2) {
		listen_vsock(strtoul(f[1], NULL, 10));
	} else if (!strcmp(op, "exec") && n == 3) {
		exec_app(f[1], f[2]);
	} else if (!strcmp(op, "mark") && n == 2) {
		mark(f[1]);
	} else if (!strcmp(op, "stamp") && n == 2) {
		stamp(f[1]);
	} else if (!strcmp(op, "wait")) {
		while (wait(NULL) > 0 || errno == EINTR)
			;
	} else if (!strcmp(op, "poweroff")) {
		print_stamps();
		sync();
		reboot(RB_POWER_OFF);
	} else {
		errno = EINVAL;
		fatal("unknown operation %s with %d fields", op, n);
	}
}

int main(void)
{
	unsigned long long start = boottime_ns();
	static char plan[1 << 20];
	int fd = open("/limit.plan", O_RDONLY | O_CLOEXEC);
	ssize_t len = fd < 0 ? -1 : read(fd, plan, sizeof plan - 1);
	if (len < 0)
		fatal("reading /limit.plan");
	close(fd);
	plan[len] = 0;
	dprintf(2, "limit: init %llu\n", start);
	char *save = NULL;
	for (char *line = strtok_r(plan, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *f[MAX_FIELDS];
		int n = 0;
		line_no++;
		for (char *s = line; n < MAX_FIELDS;) {
			f[n++] = s;
			s = strchr(s, '\t');
			if (!s)
				break;
			*s++ = 0;
		}
		run(f, n);
	}
	errno = 0;
	fatal("the plan did not power off");
	return 1;
}
