/// `passthrough-guest`: what the tool prints and how it exits, kept apart from the process so tests can run it.
public enum GuestTool {
    /// sysexits.h, so a script can tell "try again" from "no" from "broken".
    public enum ExitCode {
        public static let ok: Int32 = 0
        public static let usage: Int32 = 64
        public static let unavailable: Int32 = 69
        public static let unknownAnswer: Int32 = 70
        public static let failed: Int32 = 74
        public static let tryAgain: Int32 = 75
        public static let noAnswer: Int32 = 76
        public static let refused: Int32 = 77
    }

    public struct Outcome: Equatable, Sendable {
        public var status: Int32
        public var output: String
        public var errors: String
    }

    /// The exit status for the agent's answer line: `ok …` or `error CODE …`.
    public static func exitStatus(forAnswer answer: String) -> Int32 {
        let words = answer.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
        switch words.first {
        case "ok": return ExitCode.ok
        case "error":
            switch words.dropFirst().first {
            case "bad-request", "unknown-card": return ExitCode.usage
            case "refused": return ExitCode.refused
            case "busy", "rate-limited": return ExitCode.tryAgain
            case "not-on-bus": return ExitCode.unavailable
            case "failed": return ExitCode.failed
            default: return ExitCode.unknownAnswer
            }
        default: return ExitCode.unknownAnswer
        }
    }

    public static func run(
        _ arguments: [String], locate: () -> String? = { AgentPort.locate() }
    ) -> Outcome {
        let command: GuestCommand
        switch GuestCommand.parse(arguments) {
        case .success(.help):
            return Outcome(status: ExitCode.ok, output: GuestCommand.usage + "\n", errors: "")
        case .success(.run(let parsed)):
            command = parsed
        case .failure(let error):
            return Outcome(status: ExitCode.usage, output: "", errors: "passthrough-guest: \(error)\n\(GuestCommand.usage)\n")
        }
        guard let port = command.port ?? locate() else {
            return Outcome(status: ExitCode.unavailable, output: "", errors: """
                passthrough-guest: no virtio-serial port named \(GuestCommand.portName) in /sys/class/virtio-ports \
                (is the virtio_console module loaded, and guest-requests enabled for a card of this guest on the host?)

                """)
        }
        switch AgentPort.exchange(command.request, path: port, timeout: command.timeout) {
        case .success(let answer):
            return Outcome(status: exitStatus(forAnswer: answer), output: answer + "\n", errors: "")
        case .failure(let failure):
            let status: Int32
            switch failure {
            case .cannotOpen, .cannotSend: status = ExitCode.unavailable
            case .noAnswer, .closed: status = ExitCode.noAnswer
            }
            return Outcome(status: status, output: "", errors: "passthrough-guest: \(failure)\n")
        }
    }
}
