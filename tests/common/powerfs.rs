//! A filesystem that can lose power: an in-memory FUSE filesystem for the power-cut test.
//!
//! `kill -9` cannot test durability: what a killed process wrote is still in the OS page cache
//! and reaches the disk anyway, so a node that never fsyncs passes every kill test. This
//! filesystem keeps two images of everything: the *current* one, which reads and writes see,
//! and the *durable* one, which is what a disk would still hold after a power cut. Only a sync
//! moves data from the first to the second:
//!
//! * **File data and size** written with `write`, `ftruncate` or `fallocate` become durable when
//!   that file is `fsync`ed or `fdatasync`ed (page by page: only the pages written since its
//!   last sync are copied). Data that was written but not synced is lost whole at the cut, the
//!   worst case a disk allows (a real one may keep some of it, or tear a page; not modelled).
//! * **Directory entries** (create, mkdir, unlink, rmdir, rename) follow one of two models,
//!   chosen at mount ([`Entries`]). [`Entries::Journaled`], what ext4 and xfs do: metadata
//!   changes go to one journal in order, and any `fsync` (of a file or a directory) makes every
//!   change so far durable. [`Entries::PerDirectory`], the strict POSIX reading: an entry is
//!   durable only once the directory that holds it is `fsync`ed. Either way a file whose entry
//!   was not made durable is gone after the cut even if its data was synced, and a durable
//!   entry whose file data was never synced is an empty file.
//! * Not modelled: the writeback an OS does on its own after a while (ext4 commits its journal
//!   every 5 s; here nothing is durable that was not synced, the worst case), torn or partly
//!   kept writes, permissions, owners and times (kept, but not part of the cut), hard and
//!   symbolic links (refused), `mmap` writes (none in ddb), `sync(2)`/`syncfs(2)`.
//!
//! [`PowerFs::power_cut`] freezes the filesystem (every request fails with `EIO` from then on,
//! as a disk without power would) and returns the durable image; the test then kills the node,
//! unmounts, and mounts a new filesystem from that image with [`PowerFs::mount_image`].
//!
//! The kernel's writeback cache is off (fuser does not ask for it), so every `write(2)` reaches
//! this process before it returns: nothing is buffered in the kernel on the way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

const PAGE: u64 = 4096;
/// Attribute and entry cache time: only the kernel changes this filesystem, through requests
/// that pass here, so its caches cannot go stale within one mount.
const TTL: Duration = Duration::from_secs(60);

/// A file's bytes: its size and its non-zero pages (a missing page reads as zeros).
#[derive(Clone, Default)]
struct Bytes {
    size: u64,
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl Bytes {
    fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        let end = (offset.saturating_add(len)).min(self.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        while pos < end {
            let (index, within) = (pos / PAGE, pos % PAGE);
            let n = (PAGE - within).min(end - pos);
            match self.pages.get(&index) {
                Some(page) => out.extend_from_slice(&page[within as usize..(within + n) as usize]),
                None => out.resize(out.len() + n as usize, 0),
            }
            pos += n;
        }
        out
    }
}

/// One file or directory, in both images.
#[derive(Clone)]
struct Inode {
    kind: FileType,
    perm: u16,
    mtime: SystemTime,
    /// Files: what reads see, and what the disk holds.
    data: Bytes,
    synced: Bytes,
    /// Pages changed since the last sync of this file.
    dirty: BTreeSet<u64>,
    /// Directories: the entries reads see, and those the disk holds.
    entries: BTreeMap<OsString, u64>,
    synced_entries: BTreeMap<OsString, u64>,
}

impl Inode {
    fn new(kind: FileType, perm: u16) -> Self {
        Inode {
            kind,
            perm,
            mtime: SystemTime::now(),
            data: Bytes::default(),
            synced: Bytes::default(),
            dirty: BTreeSet::new(),
            entries: BTreeMap::new(),
            synced_entries: BTreeMap::new(),
        }
    }

    fn write(&mut self, offset: u64, buf: &[u8]) {
        let mut pos = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let (index, within) = (pos / PAGE, pos % PAGE);
            let n = ((PAGE - within) as usize).min(rest.len());
            let page = self
                .data
                .pages
                .entry(index)
                .or_insert_with(|| vec![0; PAGE as usize].into_boxed_slice());
            page[within as usize..within as usize + n].copy_from_slice(&rest[..n]);
            self.dirty.insert(index);
            rest = &rest[n..];
            pos += n as u64;
        }
        self.data.size = self.data.size.max(offset + buf.len() as u64);
        self.mtime = SystemTime::now();
    }

    fn set_size(&mut self, size: u64) {
        if size < self.data.size {
            let first_gone = size.div_ceil(PAGE);
            // Pages past the end, in either image, change when this file is next synced.
            let gone: Vec<u64> = (self.data.pages.range(first_gone..).map(|(k, _)| *k))
                .chain(self.synced.pages.range(first_gone..).map(|(k, _)| *k))
                .collect();
            self.dirty.extend(gone);
            self.data.pages.retain(|k, _| *k < first_gone);
            if !size.is_multiple_of(PAGE) {
                if let Some(page) = self.data.pages.get_mut(&(size / PAGE)) {
                    page[(size % PAGE) as usize..].fill(0);
                    self.dirty.insert(size / PAGE);
                }
            }
        }
        self.data.size = size;
        self.mtime = SystemTime::now();
    }

    /// fsync/fdatasync of a file: its data and size become durable.
    fn sync_data(&mut self) {
        for index in std::mem::take(&mut self.dirty) {
            match self.data.pages.get(&index) {
                Some(page) => {
                    self.synced.pages.insert(index, page.clone());
                }
                None => {
                    self.synced.pages.remove(&index);
                }
            }
        }
        self.synced.size = self.data.size;
        let pages = self.synced.size.div_ceil(PAGE);
        self.synced.pages.retain(|k, _| *k < pages);
    }

    /// The bytes written since the last sync (an upper bound: whole dirty pages).
    fn unsynced_bytes(&self) -> u64 {
        self.dirty.len() as u64 * PAGE
    }
}

/// Counters a test can print or assert on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub writes: u64,
    pub file_syncs: u64,
    pub dir_syncs: u64,
}

/// The filesystem's whole state, shared between the FUSE thread and the test.
struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    /// Set by [`PowerFs::power_cut`]: the power is off and every request fails.
    cut: bool,
    entries: Entries,
    stats: Stats,
}

const ROOT: u64 = 1;

/// When directory entries become durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entries {
    /// A journaling filesystem's order (ext4, xfs): every `fsync` of anything makes all the
    /// entry changes before it durable.
    Journaled,
    /// Strict POSIX: only `fsync` of a directory makes its own entries durable.
    PerDirectory,
}

impl State {
    fn empty(entries: Entries) -> Self {
        let mut inodes = HashMap::new();
        inodes.insert(ROOT, Inode::new(FileType::Directory, 0o755));
        State {
            inodes,
            next_ino: ROOT + 1,
            cut: false,
            entries,
            stats: Stats::default(),
        }
    }

    /// An fsync of `ino` (a file or a directory): what it makes durable of the directory
    /// entries, by the model.
    fn sync_entries(&mut self, ino: u64) {
        for (&i, inode) in self.inodes.iter_mut() {
            if inode.kind == FileType::Directory && (self.entries == Entries::Journaled || i == ino)
            {
                inode.synced_entries = inode.entries.clone();
            }
        }
    }

    /// What a disk holds: the durable image of everything reachable from the root through
    /// durable entries, as both images of a new filesystem.
    fn durable_image(&self) -> Image {
        let mut inodes = HashMap::new();
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            if inodes.contains_key(&ino) {
                continue;
            }
            let Some(old) = self.inodes.get(&ino) else {
                continue;
            };
            let mut new = Inode::new(old.kind, old.perm);
            new.mtime = old.mtime;
            new.data = old.synced.clone();
            new.synced = old.synced.clone();
            new.entries = old.synced_entries.clone();
            new.synced_entries = old.synced_entries.clone();
            todo.extend(new.entries.values().copied());
            inodes.insert(ino, new);
        }
        Image {
            inodes,
            next_ino: self.next_ino,
            entries: self.entries,
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let inode = self.inodes.get(&ino)?;
        let (size, nlink) = match inode.kind {
            FileType::Directory => (0, 2),
            _ => (inode.data.size, 1),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: inode.mtime,
            mtime: inode.mtime,
            ctime: inode.mtime,
            crtime: inode.mtime,
            kind: inode.kind,
            perm: inode.perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    fn dir(&mut self, ino: u64) -> Result<&mut Inode, Errno> {
        match self.inodes.get_mut(&ino) {
            Some(inode) if inode.kind == FileType::Directory => Ok(inode),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file(&mut self, ino: u64) -> Result<&mut Inode, Errno> {
        match self.inodes.get_mut(&ino) {
            Some(inode) if inode.kind == FileType::RegularFile => Ok(inode),
            Some(_) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn make(&mut self, parent: u64, name: &OsStr, kind: FileType, mode: u32) -> Result<u64, Errno> {
        let dir = self.dir(parent)?;
        if dir.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.dir(parent)?.entries.insert(name.to_owned(), ino);
        self.inodes
            .insert(ino, Inode::new(kind, (mode & 0o7777) as u16));
        Ok(ino)
    }

    fn remove(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        let ino = *self.dir(parent)?.entries.get(name).ok_or(Errno::ENOENT)?;
        let inode = self.inodes.get(&ino).ok_or(Errno::ENOENT)?;
        match (inode.kind == FileType::Directory, want_dir) {
            (true, false) => return Err(Errno::EISDIR),
            (false, true) => return Err(Errno::ENOTDIR),
            (true, true) if !inode.entries.is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        // The inode stays: open files still use it, and a durable entry may still name it.
        self.dir(parent)?.entries.remove(name);
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return Err(Errno::EINVAL);
        }
        let ino = *self.dir(parent)?.entries.get(name).ok_or(Errno::ENOENT)?;
        if let Some(&old) = self.dir(newparent)?.entries.get(newname) {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            let (moving, replaced) = (&self.inodes[&ino], &self.inodes[&old]);
            match (
                moving.kind == FileType::Directory,
                replaced.kind == FileType::Directory,
            ) {
                (false, true) => return Err(Errno::EISDIR),
                (true, false) => return Err(Errno::ENOTDIR),
                (true, true) if !replaced.entries.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
        }
        self.dir(parent)?.entries.remove(name);
        self.dir(newparent)?.entries.insert(newname.to_owned(), ino);
        Ok(())
    }
}

/// The durable image left by a power cut, from which a new filesystem is mounted.
pub struct Image {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    entries: Entries,
}

impl Image {
    /// The paths of the files in the image (for a test's messages).
    pub fn files(&self) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        let mut todo = vec![(PathBuf::from("/"), ROOT)];
        while let Some((path, ino)) = todo.pop() {
            for (name, child) in &self.inodes[&ino].entries {
                let inode = &self.inodes[child];
                if inode.kind == FileType::Directory {
                    todo.push((path.join(name), *child));
                } else {
                    out.push((path.join(name), inode.data.size));
                }
            }
        }
        out.sort();
        out
    }
}

/// The FUSE side: every request locks the state, checks the power, and acts on it.
struct Fs {
    state: Arc<Mutex<State>>,
}

impl Fs {
    fn lock(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.cut {
            return Err(Errno::EIO);
        }
        Ok(state)
    }
}

macro_rules! tri {
    ($reply:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(errno) => return $reply.error(errno),
        }
    };
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut state = tri!(reply, self.lock());
        let ino = tri!(reply, state.dir(parent.0)).entries.get(name).copied();
        match ino.and_then(|ino| state.attr(ino)) {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let state = tri!(reply, self.lock());
        match state.attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = tri!(reply, self.lock());
        if let Some(size) = size {
            tri!(reply, state.file(ino.0)).set_size(size);
        }
        if let Some(mode) = mode {
            match state.inodes.get_mut(&ino.0) {
                Some(inode) => inode.perm = (mode & 0o7777) as u16,
                None => return reply.error(Errno::ENOENT),
            }
        }
        match state.attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let mut state = tri!(reply, self.lock());
        let ino = tri!(
            reply,
            state.make(parent.0, name, FileType::RegularFile, mode & !umask)
        );
        let attr = state.attr(ino).expect("just made");
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = tri!(reply, self.lock());
        let ino = tri!(
            reply,
            state.make(parent.0, name, FileType::Directory, mode & !umask)
        );
        let attr = state.attr(ino).expect("just made");
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = tri!(reply, self.lock());
        tri!(reply, state.remove(parent.0, name, false));
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = tri!(reply, self.lock());
        tri!(reply, state.remove(parent.0, name, true));
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = tri!(reply, self.lock());
        tri!(
            reply,
            state.rename(parent.0, name, newparent.0, newname, flags)
        );
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = tri!(reply, self.lock());
        tri!(reply, state.file(ino.0));
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut state = tri!(reply, self.lock());
        let file = tri!(reply, state.file(ino.0));
        reply.data(&file.data.read(offset, size as u64));
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = tri!(reply, self.lock());
        tri!(reply, state.file(ino.0)).write(offset, data);
        state.stats.writes += 1;
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) syncs nothing.
        let _power = tri!(reply, self.lock());
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = tri!(reply, self.lock());
        tri!(reply, state.file(ino.0)).sync_data();
        state.sync_entries(ino.0);
        state.stats.file_syncs += 1;
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = tri!(reply, self.lock());
        tri!(reply, state.dir(ino.0));
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut state = tri!(reply, self.lock());
        let entries: Vec<(OsString, u64)> = tri!(reply, state.dir(ino.0))
            .entries
            .iter()
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        let mut all = vec![(OsString::from("."), ino.0), (OsString::from(".."), ino.0)];
        all.extend(entries);
        for (i, (name, child)) in all.into_iter().enumerate().skip(offset as usize) {
            let kind = state
                .inodes
                .get(&child)
                .map_or(FileType::RegularFile, |n| n.kind);
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = tri!(reply, self.lock());
        tri!(reply, state.dir(ino.0));
        state.sync_entries(ino.0);
        state.stats.dir_syncs += 1;
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _power = tri!(reply, self.lock());
        // 64 GiB free in 4 KiB blocks; a million free inodes.
        reply.statfs(
            1 << 24,
            1 << 24,
            1 << 24,
            1 << 20,
            1 << 20,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let _power = tri!(reply, self.lock());
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = tri!(reply, self.lock());
        let ino = tri!(
            reply,
            state.make(parent.0, name, FileType::RegularFile, mode & !umask)
        );
        let attr = state.attr(ino).expect("just made");
        reply.created(
            &TTL,
            &attr,
            Generation(0),
            FileHandle(0),
            FopenFlags::empty(),
        );
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let mut state = tri!(reply, self.lock());
        let file = tri!(reply, state.file(ino.0));
        if offset + length > file.data.size {
            file.set_size(offset + length);
        }
        reply.ok();
    }
}

/// A mounted power-cut filesystem; dropping it unmounts it.
pub struct PowerFs {
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
    path: PathBuf,
}

impl PowerFs {
    /// Mounts an empty filesystem on `path` (an existing empty directory) whose directory
    /// entries follow `entries`. Needs root and `/dev/fuse`.
    pub fn mount(path: &Path, entries: Entries) -> io::Result<Self> {
        Self::mount_state(path, State::empty(entries))
    }

    /// Mounts a filesystem holding what survived a power cut.
    pub fn mount_image(path: &Path, image: Image) -> io::Result<Self> {
        Self::mount_state(
            path,
            State {
                inodes: image.inodes,
                next_ino: image.next_ino,
                cut: false,
                entries: image.entries,
                stats: Stats::default(),
            },
        )
    }

    fn mount_state(path: &Path, state: State) -> io::Result<Self> {
        let state = Arc::new(Mutex::new(state));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("ddb-powerfs".to_string()),
            MountOption::DefaultPermissions,
        ];
        let session = fuser::spawn_mount(
            Fs {
                state: state.clone(),
            },
            path,
            &config,
        )?;
        Ok(PowerFs {
            state,
            session: Some(session),
            path: path.to_path_buf(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cuts the power: from now on every request fails with `EIO`. Returns what the disk
    /// still holds and how many bytes (whole pages) of written data it lost.
    pub fn power_cut(&self) -> (Image, u64) {
        let mut state = self.state();
        state.cut = true;
        let lost = state.inodes.values().map(Inode::unsynced_bytes).sum();
        (state.durable_image(), lost)
    }

    /// The counters since this mount.
    pub fn stats(&self) -> Stats {
        self.state().stats
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts (every file on it must be closed: kill the node first).
    pub fn unmount(mut self) -> io::Result<()> {
        match self.session.take() {
            Some(session) => session.umount_and_join(),
            None => Ok(()),
        }
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // A test that failed may still have files open on it: detach lazily.
            let _ = nix_umount_detach(&self.path);
            drop(session);
        }
    }
}

fn nix_umount_detach(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: umount2 with a valid NUL-terminated path has no memory-safety preconditions.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
