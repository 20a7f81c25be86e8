import ArgumentParser

@main
struct Blockwise: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "blockwise", abstract: "Block-wise training.")
}
