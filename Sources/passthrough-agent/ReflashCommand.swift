import ArgumentParser
import PassthroughAgent
import PassthroughCore
import SystemPackage

struct ReflashCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reflash",
        abstract: "Program an FPGA over JTAG without losing it: take the card off the bus, then bring it back.",
        discussion: """
            --prepare detaches the card from its guest, guards its upstream port as reflash-guard says \
            ("mask": fatal-error reporting masked; "link-disable": the link disabled once the card is \
            removed; "while-lent": masked already while the card is lent) and removes the card from the bus. \
            Program the FPGA. --finish enables a disabled link again, rescans, restores the port and \
            re-attaches the card to its guest (a card that reappears by itself is taken back as well).
            Talks to the running daemon over its root-only control socket. Giving up on the answer \
            (--timeout, Ctrl-C) hangs up, and the daemon cancels the request.
            Exits 0 done; 64 no such card; 69 the card is not on the bus; 74 a step failed (rolled back); \
            75 no daemon answers; 76 sent, but no answer came (see status); 77 refused for safety, or the \
            card is busy.
            """
    )

    /// The longest `--timeout`: twice the longest `recovery-timeout`, which `--finish` may wait out.
    static let maximumTimeout = 2 * Int(RecoveryTimeout.maximum.components.seconds)

    @Argument(help: "The card's name in the configuration.")
    var card: String

    @Flag(help: "Take the card off the bus before programming.")
    var prepare = false

    @Flag(help: "Bring the card back after programming.")
    var finish = false

    @Option(name: .long, help: ArgumentHelp("The daemon's control socket.", valueName: "path"))
    var controlSocket: String = ControlServer.defaultPath.string

    @Option(name: .long, help: ArgumentHelp("How long to wait for the daemon's answer, in seconds (1 to \(ReflashCommand.maximumTimeout)).",
                                            valueName: "seconds"))
    var timeout: Int = 180

    func validate() throws {
        guard prepare != finish else { throw ValidationError("say --prepare or --finish") }
        guard CardName(card) != nil else { throw ValidationError("\"\(card)\" is not a card name ([a-z0-9-]+)") }
        guard (1...Self.maximumTimeout).contains(timeout) else {
            throw ValidationError("--timeout must be between 1 and \(Self.maximumTimeout) seconds, not \(timeout)")
        }
    }

    func run() throws {
        let name = CardName(card)!
        let client = ControlClient(path: FilePath(controlSocket), timeout: .seconds(timeout))
        let response: ControlResponse
        do {
            response = try client.send(prepare ? .reflashPrepare(card: name) : .reflashFinish(card: name))
        } catch {
            Output.error(explanation(of: error))
            throw ExitCode(Self.exitStatus(for: error))
        }
        guard response.ok else {
            Output.error(Self.namingTheCardOnce(card, response.error ?? "refused"))
            throw ExitCode(Self.exitStatus(for: response.code))
        }
        Output.print((response.message ?? "done") + "\n")
    }

    /// The daemon's refusals begin with the card's name ("fpga0 stays on the bus: …", "fpga0: cannot disable
    /// the link …"); a bare one ("refused") gets it in front.
    static func namingTheCardOnce(_ card: String, _ message: String) -> String {
        message.hasPrefix("\(card):") || message.hasPrefix("\(card) ") ? message : "\(card): \(message)"
    }

    private func explanation(of error: ControlClientError) -> String {
        let status = "see `passthrough-agent status`"
        return switch error {
        case .noDaemon:
            "cannot reach the daemon at \(controlSocket): \(error) (is passthrough-agent.service running?)"
        case .permissionDenied:
            "\(error) (run it as root)"
        case .notTaken:
            "\(card): not sent: \(error); \(status)"
        case .timedOut:
            "\(card): sent; no answer within \(timeout) s; the daemon cancels a request whose client hung up; \(status)"
        case .connectionClosed:
            "\(card): sent; \(error) (is it stopping?); \(status)"
        case .malformedResponse, .io:
            "\(card): \(error)"
        }
    }

    /// Before the request reached the daemon (75, 77, 71), or after it was sent with no answer (76).
    static func exitStatus(for error: ControlClientError) -> Int32 {
        switch error {
        case .noDaemon: ExitStatus.tempFail
        case .permissionDenied: ExitStatus.refused
        case .notTaken, .timedOut, .connectionClosed: ExitStatus.noAnswer
        case .malformedResponse: ExitStatus.software
        case .io: ExitStatus.osError
        }
    }

    /// The daemon's refusal, by its code. A daemon too old to send one, or a code this client does
    /// not know, counts as a failed step (74), as every refusal did before codes.
    static func exitStatus(for code: ControlFailureCode?) -> Int32 {
        switch code {
        case .unknownCard?: ExitStatus.usage
        case .notOnBus?: ExitStatus.unavailable
        case .refused?, .busy?, .permissionDenied?: ExitStatus.refused
        case .cancelled?: ExitStatus.noAnswer
        case .badRequest?: ExitStatus.software
        default: ExitStatus.ioError
        }
    }
}
