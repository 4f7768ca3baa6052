import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Starts writing a file's dirty pages to the disk every few milliseconds, without waiting for
/// them, on a thread of its own.
///
/// Linux keeps written pages in memory until an fsync asks for them or they are 30 s old, so
/// whoever fsyncs next pays for everything written since the last one: a ledger commit's fsync
/// after 100 ms of replication merges has megabytes of WAL to write, and the database file's
/// flush after a checkpoint queues megabytes in front of every other fsync on the disk.
/// `sync_file_range(SYNC_FILE_RANGE_WRITE)` hands the dirty pages to the disk as they come, so an
/// fsync waits only for the last few milliseconds' worth (PostgreSQL's `wal_writer_flush_after`
/// and `checkpoint_flush_after` do the same). It changes nothing about durability: only fsync
/// promises that. Where `sync_file_range` does not exist this does nothing.
final class Writeback: Sendable {
    private typealias SyncFileRange = @convention(c) (Int32, Int64, Int64, UInt32) -> Int32
    /// glibc declares it only under _GNU_SOURCE, which Swift's Glibc module does not set.
    private static let syncFileRange: SyncFileRange? = {
        #if os(Linux)
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "sync_file_range") else { return nil }
        return unsafeBitCast(symbol, to: SyncFileRange.self)
        #else
        return nil
        #endif
    }()
    private static let write: UInt32 = 2  // SYNC_FILE_RANGE_WRITE
    /// Whether this system can start writeback of a file's pages (Linux).
    static var isAvailable: Bool { syncFileRange != nil }

    private final class Flag: Sendable { let raised = Atomic<Bool>(false) }
    private let stopping = Flag()
    private let stopped = DispatchSemaphore(value: 0)
    private let running: Bool

    /// Starts the thread for `paths` (files that do not exist yet are looked for again each second).
    init(paths: [String], interval: Duration = .milliseconds(10)) {
        guard let syncFileRange = Self.syncFileRange else {
            running = false
            return
        }
        running = true
        let micros = UInt32(interval.components.seconds * 1_000_000 + interval.components.attoseconds / 1_000_000_000_000)
        let thread = Thread { [stopping, stopped] in
            var files: [String: (fd: Int32, inode: UInt64)] = [:]
            var sinceLook = Int.max
            while !stopping.raised.load(ordering: .relaxed) {
                // Each second: open files that appeared, and reopen one that was replaced.
                if sinceLook >= 1_000_000 / Int(max(micros, 1)) {
                    sinceLook = 0
                    for path in paths {
                        var st = stat()
                        guard stat(path, &st) == 0 else { continue }
                        if let open = files[path], open.inode == UInt64(st.st_ino) { continue }
                        if let old = files[path] { close(old.fd) }
                        let fd = open(path, O_RDONLY | O_CLOEXEC)
                        if fd >= 0 { files[path] = (fd, UInt64(st.st_ino)) } else { files[path] = nil }
                    }
                }
                sinceLook += 1
                for (_, file) in files { _ = syncFileRange(file.fd, 0, 0, Self.write) }
                usleep(micros)
            }
            for (_, file) in files { close(file.fd) }
            stopped.signal()
        }
        thread.name = "citymesh-writeback"
        thread.start()
    }

    /// Stops the thread and waits for it to end.
    func stop() {
        guard running, !stopping.raised.exchange(true, ordering: .relaxed) else { return }
        stopped.wait()
    }
}

