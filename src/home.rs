//! The home directory: where the configuration, logs, runtime files and images of one
//! installation live, like the install folder of the original.
//!
//! ```text
//! <home>/
//!   conf/imageserving.toml   optional configuration (see docs/configuration.md)
//!   logs/supervisor.log      the daemon's log
//!   logs/<component>.log     each component's standard output and error
//!   run/                     mode 0700: control.sock, supervisor.pid, supervisor.lock,
//!                            samples.due
//!   catalog/                 default.ini and the named catalogs (attributes, ids)
//!   images/                  source images
//! ```
//!
//! The root path is absolute and canonical, because it doubles as the tree id: the marker every
//! supervised process carries in its environment. Two spellings of one home must give one id.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Default home when running as root.
const ROOT_HOME: &str = "/var/lib/imageserving";

/// The longest path a Unix socket address can hold: `sun_path` minus its terminating NUL
/// (107 bytes on Linux, 103 on the BSDs and macOS).
pub const SOCKET_PATH_MAX: usize = std::mem::size_of::<libc::sockaddr_un>()
    - std::mem::offset_of!(libc::sockaddr_un, sun_path)
    - 1;

/// Why the home directory cannot be used. Each message names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// The current directory was needed to make a relative home absolute.
    #[error("cannot make home `{path}` absolute: {source}")]
    Absolute {
        /// The path as given.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Resolving symbolic links in an existing path failed.
    #[error("cannot resolve home `{path}`: {source}")]
    Canonicalize {
        /// The path being resolved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The home path is not valid UTF-8, so it cannot be passed on as a tree id or in the
    /// environment of the components.
    #[error("home `{}` is not valid UTF-8; choose a home whose path is", .0.display())]
    NotUtf8(PathBuf),
    /// Neither `XDG_DATA_HOME` nor `HOME` says where a non-root user's data goes.
    #[error("cannot choose a default home: neither XDG_DATA_HOME nor HOME is set; pass --home or set IMAGESERVING_HOME")]
    NoDefault,
    /// A directory of the layout could not be created.
    #[error("cannot create directory `{}`: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The runtime directory could not be inspected or restricted to its owner.
    #[error("cannot restrict `{}` to mode 0700: {source}", path.display())]
    Restrict {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The runtime directory belongs to another user, who could replace the socket or the pid
    /// file the daemon trusts.
    #[error("`{}` belongs to uid {owner}, not to this user (uid {me}); use a home of your own or fix its owner", path.display())]
    RunDirNotOwned {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        me: u32,
    },
    /// The control socket's path does not fit a Unix socket address.
    #[error("control socket path `{}` is {len} bytes long, but a Unix socket path may have at most {max}; choose a shorter --home", path.display())]
    SocketPathTooLong {
        /// The socket path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The home directory of one installation. Every file the daemon and the CLI use is below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    /// Absolute, with symbolic links resolved as far as the path exists, and UTF-8.
    root: PathBuf,
}

impl Home {
    /// A home at `path`: made absolute against the current directory, with the part that
    /// exists canonicalized and the rest normalized, so the same directory always gives the
    /// same root (and tree id), before and after [`Home::ensure_layout`] creates it.
    pub fn new(path: impl AsRef<Path>) -> Result<Home, HomeError> {
        let path = path.as_ref();
        let absolute = std::path::absolute(path).map_err(|source| HomeError::Absolute {
            path: path.to_path_buf(),
            source,
        })?;
        let root = stable_path(&absolute)?;
        if root.to_str().is_none() {
            return Err(HomeError::NotUtf8(root));
        }
        Ok(Home { root })
    }

    /// The home given explicitly (by `--home` or `IMAGESERVING_HOME`), else the default:
    /// `/var/lib/imageserving` for root, else `$XDG_DATA_HOME/imageserving`, else
    /// `$HOME/.local/share/imageserving`.
    pub fn resolve(explicit: Option<PathBuf>) -> Result<Home, HomeError> {
        match explicit {
            Some(path) => Home::new(path),
            None => Home::new(default_root(
                nix::unistd::geteuid().is_root(),
                std::env::var_os("XDG_DATA_HOME").as_deref(),
                std::env::var_os("HOME").as_deref(),
            )?),
        }
    }

    /// The home directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The optional configuration file, `conf/imageserving.toml`.
    pub fn conf_file(&self) -> PathBuf {
        self.root.join("conf").join("imageserving.toml")
    }

    /// The log directory, `logs/`.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The runtime directory, `run/` (mode 0700).
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// The source images, `images/`.
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// The catalogs, `catalog/` (`default.ini` and one file per named catalog).
    pub fn catalog_dir(&self) -> PathBuf {
        self.root.join("catalog")
    }

    /// The daemon's control socket, `run/control.sock`.
    pub fn socket_path(&self) -> PathBuf {
        self.run_dir().join("control.sock")
    }

    /// The notification socket, `run/notify.sock`: the components' processes tell the daemon
    /// things there (their `NOTIFY_SOCKET`).
    pub fn notify_socket_path(&self) -> PathBuf {
        self.run_dir().join("notify.sock")
    }

    /// The daemon's pid file, `run/supervisor.pid`.
    pub fn pid_file(&self) -> PathBuf {
        self.run_dir().join("supervisor.pid")
    }

    /// The lock the daemon holds while it runs, `run/supervisor.lock`.
    pub fn lock_file(&self) -> PathBuf {
        self.run_dir().join("supervisor.lock")
    }

    /// `run/samples.due`: written by the daemon when it starts, taken by the Image Server, which
    /// then creates the samples of a fresh home (see `imaging::samples::provision_if_due`).
    pub fn samples_due(&self) -> PathBuf {
        self.run_dir().join("samples.due")
    }

    /// The daemon's own log, `logs/supervisor.log`.
    pub fn supervisor_log(&self) -> PathBuf {
        self.logs_dir().join("supervisor.log")
    }

    /// The detached daemon's standard error, `logs/supervisor.stderr`: only what bypasses its
    /// log (a crash message, the reason of an escalation).
    pub fn supervisor_stderr(&self) -> PathBuf {
        self.logs_dir().join("supervisor.stderr")
    }

    /// The log of component `name`, `logs/<name>.log`.
    pub fn component_log(&self, name: &str) -> PathBuf {
        self.logs_dir().join(format!("{name}.log"))
    }

    /// The tree id of the daemon running in this home: the root path.
    pub fn tree_id(&self) -> String {
        // `new` checked that the root is UTF-8, so nothing is lost here.
        self.root.to_string_lossy().into_owned()
    }

    /// Creates the home and `conf/`, `logs/`, `run/` and `images/` below it. `run/` is made
    /// mode 0700, and narrowed to 0700 if it exists with a wider mode; it must belong to us.
    pub fn ensure_layout(&self) -> Result<(), HomeError> {
        for dir in [
            self.root.join("conf"),
            self.logs_dir(),
            self.images_dir(),
            self.catalog_dir(),
        ] {
            fs::create_dir_all(&dir)
                .map_err(|source| HomeError::CreateDir { path: dir, source })?;
        }
        let run = self.run_dir();
        match fs::DirBuilder::new().mode(0o700).create(&run) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(HomeError::CreateDir { path: run, source }),
        }
        // The mode given at creation is filtered by the umask, and an existing directory may
        // be wider still: check and narrow it in both cases.
        let meta = fs::metadata(&run).map_err(|source| HomeError::Restrict {
            path: run.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(HomeError::CreateDir {
                path: run,
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a directory",
                ),
            });
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            return Err(HomeError::RunDirNotOwned {
                path: run,
                owner: meta.uid(),
                me,
            });
        }
        if meta.mode() & 0o7777 != 0o700 {
            fs::set_permissions(&run, fs::Permissions::from_mode(0o700))
                .map_err(|source| HomeError::Restrict { path: run, source })?;
        }
        Ok(())
    }

    /// Checks that [`Home::socket_path`] fits a Unix socket address, so that a too deep home
    /// fails with a clear message instead of an obscure `bind` error.
    pub fn check_socket_path(&self) -> Result<(), HomeError> {
        let path = self.socket_path();
        let len = path.as_os_str().len();
        if len > SOCKET_PATH_MAX {
            return Err(HomeError::SocketPathTooLong {
                path,
                len,
                max: SOCKET_PATH_MAX,
            });
        }
        Ok(())
    }
}

/// The default home for this user; see [`Home::resolve`].
fn default_root(
    is_root: bool,
    xdg_data_home: Option<&OsStr>,
    home: Option<&OsStr>,
) -> Result<PathBuf, HomeError> {
    if is_root {
        return Ok(PathBuf::from(ROOT_HOME));
    }
    // The XDG base directory specification says to ignore a relative XDG_DATA_HOME.
    if let Some(xdg) = xdg_data_home.map(Path::new).filter(|p| p.is_absolute()) {
        return Ok(xdg.join("imageserving"));
    }
    match home.filter(|h| !h.is_empty()) {
        Some(home) => Ok(Path::new(home).join(".local/share/imageserving")),
        None => Err(HomeError::NoDefault),
    }
}

/// `absolute` with symbolic links resolved as far as the path exists and the rest normalized
/// lexically (`.` dropped, `..` popped), which is exact because a missing part holds no links.
fn stable_path(absolute: &Path) -> Result<PathBuf, HomeError> {
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => continue,
            Component::ParentDir if fs::symlink_metadata(&out).is_err() => {
                out.pop();
            }
            other => out.push(other),
        }
        // Canonicalizing each existing prefix resolves links before a later `..` applies.
        if fs::symlink_metadata(&out).is_ok() {
            out = fs::canonicalize(&out).map_err(|source| HomeError::Canonicalize {
                path: out.clone(),
                source,
            })?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_created_with_a_private_run_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::new(tmp.path().join("h")).unwrap();
        home.ensure_layout().unwrap();
        for dir in ["conf", "logs", "run", "images"] {
            assert!(home.root().join(dir).is_dir(), "{dir} missing");
        }
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&home.run_dir()), 0o700);

        // A run/ someone widened is narrowed again.
        fs::set_permissions(home.run_dir(), fs::Permissions::from_mode(0o755)).unwrap();
        home.ensure_layout().unwrap();
        assert_eq!(mode(&home.run_dir()), 0o700);
    }

    #[test]
    fn paths_are_below_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::new(tmp.path()).unwrap();
        let root = home.root();
        assert_eq!(home.conf_file(), root.join("conf/imageserving.toml"));
        assert_eq!(home.socket_path(), root.join("run/control.sock"));
        assert_eq!(home.pid_file(), root.join("run/supervisor.pid"));
        assert_eq!(home.lock_file(), root.join("run/supervisor.lock"));
        assert_eq!(home.samples_due(), root.join("run/samples.due"));
        assert_eq!(home.supervisor_log(), root.join("logs/supervisor.log"));
        assert_eq!(home.component_log("is"), root.join("logs/is.log"));
        assert_eq!(home.tree_id(), root.to_str().unwrap());
    }

    #[test]
    fn too_long_socket_path_is_refused_with_its_length() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::new(tmp.path().join("x".repeat(120))).unwrap();
        let err = home.check_socket_path().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, HomeError::SocketPathTooLong { .. }));
        assert!(msg.contains("control.sock"), "{msg}");
        assert!(msg.contains(&SOCKET_PATH_MAX.to_string()), "{msg}");
        assert!(msg.contains("--home"), "{msg}");

        assert!(Home::new(tmp.path()).unwrap().check_socket_path().is_ok());
    }

    #[test]
    fn explicit_home_is_used_and_canonical() {
        let tmp = tempfile::tempdir().unwrap();
        let canonical = fs::canonicalize(tmp.path()).unwrap();
        let home = Home::resolve(Some(tmp.path().join("a/./b/../c"))).unwrap();
        assert_eq!(home.root(), canonical.join("a/c"));
        // Creating it does not change its identity.
        home.ensure_layout().unwrap();
        assert_eq!(Home::new(home.root()).unwrap(), home);
    }

    #[test]
    fn relative_home_is_made_absolute() {
        let home = Home::new("some/relative/home").unwrap();
        assert!(home.root().is_absolute());
        let cwd = fs::canonicalize(std::env::current_dir().unwrap()).unwrap();
        assert_eq!(home.root(), cwd.join("some/relative/home"));
    }

    #[test]
    fn default_home_follows_root_then_xdg_then_home() {
        let d = |root, xdg: Option<&str>, home: Option<&str>| {
            default_root(root, xdg.map(OsStr::new), home.map(OsStr::new))
        };
        assert_eq!(
            d(true, Some("/x"), Some("/h")).unwrap(),
            Path::new(ROOT_HOME)
        );
        assert_eq!(
            d(false, Some("/x"), Some("/h")).unwrap(),
            Path::new("/x/imageserving")
        );
        assert_eq!(
            d(false, Some("relative"), Some("/h")).unwrap(),
            Path::new("/h/.local/share/imageserving")
        );
        assert!(matches!(d(false, None, None), Err(HomeError::NoDefault)));
    }
}
