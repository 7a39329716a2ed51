#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SystemPackage

/// One file of the agent's own state under `/run/passthrough-agent`, replaced whole: written to a temporary
/// beside it, fsynced, renamed over the old one, the directory fsynced. A kill -9 at any point leaves the old
/// contents or the new, never half of them. Not sysfs, so not through the sysfs funnel.
///
/// The metrics file goes through here too: node_exporter's textfile collector reads `*.prom` files only, so
/// the temporary (`.NAME.new`) is never read half-written.
enum StateFile {
    /// Which step failed, and on which path.
    struct Failure: Error, Equatable, CustomStringConvertible {
        enum Step { case createDirectory, write, remove }
        let step: Step
        let path: FilePath
        let errno: Errno

        var description: String {
            let what = switch step {
            case .createDirectory: "cannot create \(path)"
            case .write: "cannot write \(path)"
            case .remove: "cannot remove \(path)"
            }
            return "\(what): \(errno)"
        }
    }

    /// Replaces `file` with `contents`. The agent's own state: its directory is created (mode 0700) first,
    /// and the file is the owner's only. `permissions` and no `createDirectory` are for a file another
    /// program reads from a directory that program's package made (the metrics file).
    static func replace(_ file: FilePath, with contents: String, permissions: FilePermissions = .ownerReadWrite,
                        createDirectory: Bool = true) throws(Failure) {
        let directory = file.removingLastComponent()
        if createDirectory { try makeDirectory(directory) }
        let temporary = directory.appending(".\(file.lastComponent?.string ?? "state").new")
        do {
            let fd = try FileDescriptor.open(temporary, .writeOnly, options: [.create, .truncate, .closeOnExec], permissions: permissions)
            try fd.closeAfter {
                // The unit's UMask=0077 would take a reader's bits away from what open() asked for.
                if permissions != .ownerReadWrite, fchmod(fd.rawValue, permissions.rawValue) != 0 { throw Errno(rawValue: errno) }
                _ = try fd.writeAll(Array(contents.utf8))
                try fsync(fd)
            }
        } catch {
            throw Failure(step: .write, path: temporary, errno: error as? Errno ?? .ioError)
        }
        if temporary.withPlatformString({ from in file.withPlatformString { rename(from, $0) } }) != 0 {
            throw Failure(step: .write, path: file, errno: Errno(rawValue: errno))
        }
        // The rename is durable only once the directory is; /run is tmpfs, but a test or a packager may
        // point the directory elsewhere.
        if let fd = try? FileDescriptor.open(directory, .readOnly, options: [.directory, .closeOnExec]) {
            _ = try? fd.closeAfter { try fsync(fd) }
        }
    }

    /// Removes `file`; one that is not there is no error.
    static func remove(_ file: FilePath) throws(Failure) {
        if file.withPlatformString({ unlink($0) }) != 0, errno != ENOENT {
            throw Failure(step: .remove, path: file, errno: Errno(rawValue: errno))
        }
    }

    private static func makeDirectory(_ directory: FilePath) throws(Failure) {
        var current = FilePath(root: directory.root)
        for component in directory.components {
            current.append(component)
            if current.withPlatformString({ mkdir($0, 0o700) }) != 0, errno != EEXIST {
                throw Failure(step: .createDirectory, path: current, errno: Errno(rawValue: errno))
            }
        }
    }

    private static func fsync(_ fd: FileDescriptor) throws(Errno) {
        while Glibc.fsync(fd.rawValue) != 0 {
            let code = Errno(rawValue: errno)
            if code != .interrupted { throw code }
        }
    }
}
