import ArgumentParser
import PassthroughAgent
import PassthroughConfig
import PassthroughCore
import SystemPackage

/// Options of every subcommand that reads the host.
struct HostOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The configuration file.", valueName: "path"))
    var config: String = AgentConfig.defaultPath

    @Option(name: .long, help: ArgumentHelp("Where sysfs is mounted (a test tree for dry experiments).", valueName: "path"))
    var sysfsRoot: String = "/sys"

    @Option(name: .long, help: ArgumentHelp("Where procfs is mounted.", valueName: "path", visibility: .hidden))
    var procRoot: String = "/proc"

    var host: HostEnvironment {
        HostEnvironment(sysfsRoot: FilePath(sysfsRoot), procRoot: FilePath(procRoot))
    }

    /// The configuration, or every mistake on stderr and exit 78: nothing on the host is touched.
    func loadConfig() throws -> AgentConfig {
        do {
            return try ConfigLoader.load(path: config)
        } catch {
            Output.error(error.description)
            throw ExitCode(ExitStatus.config)
        }
    }
}
