import PassthroughCore

/// One invocation of `passthrough-guest`, read from its arguments.
///
/// `passthrough-guest prepare CARD | finish CARD | status | version [--port PATH] [--timeout S]`
public struct GuestCommand: Equatable, Sendable {
    /// The request line sent to the agent, without its newline.
    public var request: String
    /// The port to use instead of finding it by name.
    public var port: String?
    /// How long to wait for the answer.
    public var timeout: Duration

    /// The port the agent listens on, as the guest names it.
    public static let portName = "org.passthrough-agent.0"

    /// Preparing or finishing a reflash detaches or re-attaches the card: give the agent time.
    static let defaultTimeout = Duration.seconds(60)
    static let defaultQueryTimeout = Duration.seconds(10)

    public static let usage = """
        usage: passthrough-guest prepare CARD | finish CARD | status | version [--port PATH] [--timeout SECONDS]

          prepare CARD   ask the host agent to take CARD off the bus for reprogramming
          finish CARD    ask the host agent to bring CARD back after reprogramming
          status         the state of the cards lent to this guest
          version        the agent's protocol version

          --port PATH    the agent's port (default: the virtio-serial port named \(portName),
                         found in /sys/class/virtio-ports, or /dev/virtio-ports/\(portName))
          --timeout S    seconds to wait for the answer (default 60 for prepare/finish, 10 otherwise)

        Prints the agent's one-line answer. Exit status: 0 ok; 64 bad request or unknown card; 69 no port or
        card not on the bus; 70 an answer this tool does not know; 74 failed; 75 busy or rate-limited (try
        again); 76 no answer in time; 77 refused.
        """

    /// Why the arguments are not a command; printed with the usage.
    public struct UsageError: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    public enum Parsed: Equatable, Sendable {
        case run(GuestCommand)
        case help
    }

    public static func parse(_ arguments: [String]) -> Result<Parsed, UsageError> {
        var words: [String] = []
        var port: String?
        var timeout: Duration?
        var index = 0
        func value(of option: String) -> Result<String, UsageError> {
            index += 1
            guard index < arguments.count else { return .failure(UsageError(description: "\(option) needs a value")) }
            return .success(arguments[index])
        }
        while index < arguments.count {
            let argument = arguments[index]
            switch argument {
            case "-h", "--help":
                return .success(.help)
            case "--port":
                switch value(of: argument) {
                case .success(let path) where !path.isEmpty: port = path
                case .success: return .failure(UsageError(description: "--port needs a path"))
                case .failure(let error): return .failure(error)
                }
            case "--timeout":
                switch value(of: argument) {
                case .success(let text):
                    guard let seconds = Double(text), seconds.isFinite, seconds > 0, seconds <= 86_400 else {
                        return .failure(UsageError(description: "--timeout: '\(text)' is not a number of seconds (0 < S <= 86400)"))
                    }
                    timeout = .milliseconds(Int64((seconds * 1000).rounded(.up)))
                case .failure(let error): return .failure(error)
                }
            default:
                guard !argument.hasPrefix("-") else { return .failure(UsageError(description: "unknown option \(argument)")) }
                words.append(argument)
            }
            index += 1
        }
        let request: String
        switch words.first {
        case "prepare", "finish":
            guard words.count == 2 else { return .failure(UsageError(description: "\(words[0]) takes one card name")) }
            // Only a name can go into the line: no blank that would split it, no newline that would start another
            // request. Which names exist is the agent's to say.
            guard CardName(words[1]) != nil else {
                return .failure(UsageError(description: "'\(words[1])' is not a card name (a-z, 0-9 and -, as in the host's configuration)"))
            }
            request = "\(words[0]) \(words[1])"
        case "status", "version":
            guard words.count == 1 else { return .failure(UsageError(description: "\(words[0]) takes no arguments")) }
            request = words[0]
        case nil:
            return .failure(UsageError(description: "no command"))
        case let other?:
            return .failure(UsageError(description: "unknown command '\(other)'"))
        }
        let isQuery = words[0] == "status" || words[0] == "version"
        return .success(.run(GuestCommand(
            request: request, port: port, timeout: timeout ?? (isQuery ? defaultQueryTimeout : defaultTimeout))))
    }
}
