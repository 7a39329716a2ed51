import ArgumentParser
import PassthroughAgent
import PassthroughCore
import SystemPackage

struct ReflashCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reflash",
        abstract: "Program an FPGA over JTAG without losing it: take the card off the bus, then bring it back.",
        discussion: """
            --prepare detaches the card from its guest, guards the upstream port (reflash-guard = true) and \
            removes the card from the bus. Program the FPGA. --finish rescans, restores the port and \
            re-attaches the card to its guest (a card that reappears by itself is taken back as well).
            Talks to the running daemon over its root-only control socket.
            """
    )

    @Argument(help: "The card's name in the configuration.")
    var card: String

    @Flag(help: "Take the card off the bus before programming.")
    var prepare = false

    @Flag(help: "Bring the card back after programming.")
    var finish = false

    @Option(name: .long, help: ArgumentHelp("The daemon's control socket.", valueName: "path"))
    var controlSocket: String = ControlServer.defaultPath.string

    @Option(name: .long, help: ArgumentHelp("How long to wait for the daemon's answer, in seconds.", valueName: "seconds"))
    var timeout: Int = 180

    func validate() throws {
        guard prepare != finish else { throw ValidationError("say --prepare or --finish") }
        guard CardName(card) != nil else { throw ValidationError("\"\(card)\" is not a card name ([a-z0-9-]+)") }
    }

    func run() throws {
        let name = CardName(card)!
        let client = ControlClient(path: FilePath(controlSocket), timeout: .seconds(timeout))
        let response: ControlResponse
        do {
            response = try client.send(prepare ? .reflashPrepare(card: name) : .reflashFinish(card: name))
        } catch {
            Output.error("cannot reach the daemon at \(controlSocket): \(error) (is passthrough-agent.service running? you must be root)")
            throw ExitCode(ExitStatus.tempFail)
        }
        guard response.ok else {
            Output.error("\(card): \(response.error ?? "refused")")
            throw ExitCode(ExitStatus.ioError)
        }
        Output.print((response.message ?? "done") + "\n")
    }
}
