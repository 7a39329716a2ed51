import Glibc
import PassthroughSystemd
import SystemPackage
import Testing

/// The environment is process-wide, so every test that sets NOTIFY_SOCKET or WATCHDOG_* lives in
/// this one serialised suite and restores the variables it touched.
@Suite(.serialized)
struct SystemdNotifierTests {
    private let notifier = SystemdNotifier()

    @Test func sendsEachStateToTheNotifySocket() throws {
        let socket = try FakeDatagramSocket()
        let environment = EnvironmentOverride(["NOTIFY_SOCKET": socket.path])
        defer { environment.restore() }
        #expect(notifier.isSupervised)
        #expect(try notifier.ready() == .delivered)
        #expect(socket.receive() == "READY=1")
        #expect(try notifier.status("2 of 3 cards attached") == .delivered)
        #expect(socket.receive() == "STATUS=2 of 3 cards attached")
        #expect(try notifier.watchdog() == .delivered)
        #expect(socket.receive() == "WATCHDOG=1")
        #expect(try notifier.stopping() == .delivered)
        #expect(socket.receive() == "STOPPING=1")
        #expect(socket.receive() == nil)
    }

    @Test func reloadingCarriesTheMonotonicTimestamp() throws {
        let socket = try FakeDatagramSocket()
        let environment = EnvironmentOverride(["NOTIFY_SOCKET": socket.path])
        defer { environment.restore() }
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let before = UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1_000

        try notifier.reloading()

        let lines = try #require(socket.receive()).split(separator: "\n").map(String.init)
        #expect(lines.count == 2)
        #expect(lines.first == "RELOADING=1")
        let stamp = try #require(lines.last.flatMap { $0.split(separator: "=").last }.flatMap { UInt64($0) })
        #expect(lines.last?.hasPrefix("MONOTONIC_USEC=") == true)
        #expect(stamp >= before && stamp < before + 10_000_000)
    }

    @Test func sendsSeveralStatesInOneDatagram() throws {
        let socket = try FakeDatagramSocket()
        let environment = EnvironmentOverride(["NOTIFY_SOCKET": socket.path])
        defer { environment.restore() }
        try notifier.send([.status("Watching 2 cards"), .ready])
        #expect(socket.receive() == "STATUS=Watching 2 cards\nREADY=1")
    }

    @Test func statusCannotSmuggleAssignments() throws {
        let socket = try FakeDatagramSocket()
        let environment = EnvironmentOverride(["NOTIFY_SOCKET": socket.path])
        defer { environment.restore() }
        try notifier.status("config error\nREADY=1")
        #expect(socket.receive() == "STATUS=config error READY=1")
    }

    @Test func withoutNotifySocketNothingIsSent() throws {
        let environment = EnvironmentOverride([:])
        defer { environment.restore() }
        #expect(!notifier.isSupervised)
        #expect(try notifier.ready() == .notSupervised)
        #expect(try notifier.watchdog() == .notSupervised)
    }

    @Test func missingNotifySocketIsATypedError() throws {
        let environment = EnvironmentOverride(["NOTIFY_SOCKET": "/nonexistent-\(getpid())/notify"])
        defer { environment.restore() }
        #expect(throws: SystemdError(code: .notify, errno: .noSuchFileOrDirectory)) {
            try notifier.ready()
        }
    }

    @Test func watchdogIntervalIsHalfTheTimeout() throws {
        let environment = EnvironmentOverride(["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "\(getpid())"])
        defer { environment.restore() }
        #expect(try notifier.watchdogTimeout() == .seconds(30))
        #expect(try notifier.watchdogInterval == .seconds(15))
    }

    @Test func watchdogForAnotherProcessIsOff() throws {
        let environment = EnvironmentOverride(["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "\(getpid() + 1)"])
        defer { environment.restore() }
        #expect(try notifier.watchdogInterval == nil)
    }

    @Test func watchdogOffWithoutVariables() throws {
        let environment = EnvironmentOverride([:])
        defer { environment.restore() }
        #expect(try notifier.watchdogInterval == nil)
    }

    @Test func malformedWatchdogSettingIsATypedError() throws {
        let environment = EnvironmentOverride(["WATCHDOG_USEC": "soon", "WATCHDOG_PID": "\(getpid())"])
        defer { environment.restore() }
        #expect(throws: SystemdError(code: .watchdogConfiguration, errno: .invalidArgument)) {
            try notifier.watchdogTimeout()
        }
    }
}

struct NotifyMessageTests {
    @Test func payloadsFollowSdNotify() {
        #expect(NotifyMessage.payload([.ready]) == "READY=1")
        #expect(NotifyMessage.payload([.stopping, .status("bye")]) == "STOPPING=1\nSTATUS=bye")
        #expect(NotifyMessage.reloading(monotonicMicroseconds: 42).assignments == ["RELOADING=1", "MONOTONIC_USEC=42"])
    }

    @Test func errorDescriptionNamesTheErrno() {
        let error = SystemdError(code: .notify, errno: .noSuchFileOrDirectory)
        #expect(error.description == "sd_notify failed: No such file or directory (errno 2)")
    }
}

/// Sets the variables libsystemd reads for one test and puts the previous values back.
private struct EnvironmentOverride {
    private static let names = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]
    private let saved: [(String, String?)]

    init(_ values: [String: String]) {
        saved = Self.names.map { name in (name, getenv(name).map { String(cString: $0) }) }
        for name in Self.names { unsetenv(name) }
        for (name, value) in values { setenv(name, value, 1) }
    }

    func restore() {
        for (name, value) in saved {
            if let value { setenv(name, value, 1) } else { unsetenv(name) }
        }
    }
}
