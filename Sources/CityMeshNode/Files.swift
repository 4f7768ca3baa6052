import CityMeshCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Small file helpers with the permissions CityMesh needs.
public enum Files {
    public static func read(_ path: String, what: String) throws -> String {
        guard FileManager.default.fileExists(atPath: path) else {
            throw CityMeshError(.fileNotFound, "\(what) \(path) does not exist: check the path")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CityMeshError(.ioError, "cannot read \(what) \(path): check its permissions")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw CityMeshError(.malformedInput, "\(what) \(path) is not text: expected a PEM file")
        }
        return text
    }

    /// Writes a file atomically with the given mode (0600 for keys and tokens).
    public static func write(_ text: String, to path: String, mode: Int) throws {
        let tmp = path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(text.utf8), attributes: [.posixPermissions: mode]) else {
            throw CityMeshError(.ioError, "cannot write \(path): check the directory's permissions")
        }
        // createFile applies the umask; set the mode explicitly.
        chmod(tmp, mode_t(mode))
        guard rename(tmp, path) == 0 else {
            unlink(tmp)
            throw CityMeshError(.ioError, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }

    public static func makeDirectory(_ path: String, mode: Int = 0o700) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: mode])
        } catch {
            throw CityMeshError(.ioError, "cannot create directory \(path): \(error.localizedDescription)")
        }
    }

    public static func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    public static func mode(_ path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue
    }
}
