#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import PassthroughCore
import SystemPackage

/// The only door to the filesystem: every sysfs access goes through these calls.
///
/// Tests put an emulation of the kernel's PCI bus behind the same door (see
/// `EmulatedPCIBus` in the tests) so the binder is exercised against real files that react like
/// the kernel does.
public protocol SysfsIO: Sendable {
    func read(_ path: FilePath) throws(SysfsError) -> String
    /// The link's target, or `nil` when there is no link at `path`.
    func readLink(_ path: FilePath) throws(SysfsError) -> FilePath?
    func list(_ directory: FilePath) throws(SysfsError) -> [String]
    func write(_ value: String, to path: FilePath) throws(SysfsError)
    func exists(_ path: FilePath) -> Bool
    /// Up to `count` bytes at `offset` (one `pread`): binary attributes such as `config`.
    /// Fewer bytes come back at the end of the file, or where the kernel limits the reader.
    func readBytes(_ path: FilePath, offset: Int64, count: Int) throws(SysfsError) -> [UInt8]
    /// `bytes` at `offset` in one `pwrite`, so the kernel sees one access of that width.
    func writeBytes(_ path: FilePath, offset: Int64, _ bytes: [UInt8]) throws(SysfsError)
    /// The number of the character device `path` leads to, following links (`/proc/PID/fd/N` included: the
    /// kernel resolves those to the open file itself, whatever its name); `nil` for any other kind of file.
    func characterDevice(at path: FilePath) throws(SysfsError) -> DeviceNumber?
}

/// Plain syscalls; `EINTR` is retried by swift-system, every other errno is typed.
public struct LinuxSysfsIO: SysfsIO {
    public init() {}

    public func read(_ path: FilePath) throws(SysfsError) -> String {
        do {
            let fd = try FileDescriptor.open(path, .readOnly, options: .closeOnExec)
            return try fd.closeAfter {
                var bytes: [UInt8] = []
                var chunk = [UInt8](repeating: 0, count: 4096)
                while true {
                    let count = try chunk.withUnsafeMutableBytes { try fd.read(into: $0) }
                    if count == 0 { break }
                    bytes.append(contentsOf: chunk[..<count])
                }
                return String(decoding: bytes, as: UTF8.self)
            }
        } catch let errno as Errno {
            throw SysfsError(operation: .read, path: path, errno: errno)
        } catch {
            throw SysfsError(operation: .read, path: path, errno: .ioError)
        }
    }

    public func readLink(_ path: FilePath) throws(SysfsError) -> FilePath? {
        var buffer = [CChar](repeating: 0, count: 4097)
        let count = path.withPlatformString { Glibc.readlink($0, &buffer, 4096) }
        if count < 0 {
            let errno = Errno(rawValue: Glibc.errno)
            if errno == .noSuchFileOrDirectory || errno == .invalidArgument { return nil }
            throw SysfsError(operation: .readLink, path: path, errno: errno)
        }
        let bytes = buffer[..<count].map { UInt8(bitPattern: $0) }
        return FilePath(String(decoding: bytes, as: UTF8.self))
    }

    public func list(_ directory: FilePath) throws(SysfsError) -> [String] {
        guard let stream = directory.withPlatformString({ opendir($0) }) else {
            throw SysfsError(operation: .list, path: directory, errno: Errno(rawValue: Glibc.errno))
        }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    public func write(_ value: String, to path: FilePath) throws(SysfsError) {
        do {
            // No O_CREAT: sysfs attributes exist or the kernel does not offer the operation.
            let fd = try FileDescriptor.open(path, .writeOnly, options: .closeOnExec)
            try fd.closeAfter {
                // One write() call: sysfs store handlers see exactly one buffer.
                let written = try fd.writeAll(Array(value.utf8))
                _ = written
            }
        } catch let errno as Errno {
            throw SysfsError(operation: .write, path: path, errno: errno, value: value)
        } catch {
            throw SysfsError(operation: .write, path: path, errno: .ioError, value: value)
        }
    }

    public func exists(_ path: FilePath) -> Bool {
        path.withPlatformString { access($0, F_OK) == 0 }
    }

    public func readBytes(_ path: FilePath, offset: Int64, count: Int) throws(SysfsError) -> [UInt8] {
        do {
            let fd = try FileDescriptor.open(path, .readOnly, options: .closeOnExec)
            return try fd.closeAfter {
                var bytes = [UInt8](repeating: 0, count: count)
                let read = try bytes.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: offset, into: $0) }
                return Array(bytes[..<read])
            }
        } catch let errno as Errno {
            throw SysfsError(operation: .read, path: path, errno: errno)
        } catch {
            throw SysfsError(operation: .read, path: path, errno: .ioError)
        }
    }

    public func characterDevice(at path: FilePath) throws(SysfsError) -> DeviceNumber? {
        var info = stat()
        guard path.withPlatformString({ stat($0, &info) }) == 0 else {
            throw SysfsError(operation: .stat, path: path, errno: Errno(rawValue: Glibc.errno))
        }
        guard info.st_mode & S_IFMT == S_IFCHR else { return nil }
        return DeviceNumber(rawValue: UInt64(info.st_rdev))
    }

    public func writeBytes(_ path: FilePath, offset: Int64, _ bytes: [UInt8]) throws(SysfsError) {
        let shown = bytes.map { Hex.format($0, width: 2) }.joined(separator: " ") + " at offset \(offset)"
        do {
            let fd = try FileDescriptor.open(path, .writeOnly, options: .closeOnExec)
            try fd.closeAfter {
                let written = try bytes.withUnsafeBytes { try fd.write(toAbsoluteOffset: offset, $0) }
                // A short pwrite on a config file means the kernel did not take the whole field.
                if written != bytes.count { throw Errno.ioError }
            }
        } catch let errno as Errno {
            throw SysfsError(operation: .write, path: path, errno: errno, value: shown)
        } catch {
            throw SysfsError(operation: .write, path: path, errno: .ioError, value: shown)
        }
    }
}
