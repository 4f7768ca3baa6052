import CityMeshCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An exclusive lock on a node directory, held by `citymesh serve` for its lifetime.
/// `flock` is released by the kernel when the process dies, so a crash never leaves a stale lock.
public final class NodeLock: Sendable {
    let fd: Int32

    init(fd: Int32) { self.fd = fd }

    public static func acquire(_ dir: NodeDirectory) throws -> NodeLock {
        let fd = open(dir.lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw CityMeshError(.ioError, "cannot open \(dir.lockPath): \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            var buf = [UInt8](repeating: 0, count: 32)
            let n = pread(fd, &buf, 31, 0)
            let pid = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
            close(fd)
            throw CityMeshError(.nodeLocked, "the node in \(dir.root.path) is already running (pid \(pid)): stop it first, or use another --dir")
        }
        let pid = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = pid.withCString { pwrite(fd, $0, strlen($0), 0) }
        return NodeLock(fd: fd)
    }

    /// Whether some process holds the lock (the node is running or starting).
    public static func isHeld(_ dir: NodeDirectory) -> Bool {
        let fd = open(dir.lockPath, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        if flock(fd, LOCK_EX | LOCK_NB) == 0 {
            flock(fd, LOCK_UN)
            return false
        }
        return true
    }

    public func release() {
        flock(fd, LOCK_UN)
        close(fd)
    }
}
