import Foundation

/// Files shipped next to the sources (unit, catalog, udev rule, README), found from this file's path so
/// the tests work from any working directory.
public enum RepositoryFile {
    public static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // PassthroughTestSupport
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()

    public static func url(_ relativePath: String) -> URL {
        root.appendingPathComponent(relativePath)
    }

    public static func contents(_ relativePath: String) throws -> String {
        try String(contentsOf: url(relativePath), encoding: .utf8)
    }
}
