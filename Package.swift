// swift-tools-version:6.0
import PackageDescription

// blockwise: memory-budgeted, block-wise (minimizing-movement) training of ResNets.
// Targets follow the parts of DESIGN.md; system libraries wrap the C APIs we use.
let package = Package(
    name: "blockwise",
    products: [
        .executable(name: "blockwise", targets: ["blockwise"]),
        .library(name: "BlockwiseKernels", targets: ["BlockwiseKernels"]),
        .library(name: "BlockwiseData", targets: ["BlockwiseData"]),
        .library(name: "BlockwiseTraining", targets: ["BlockwiseTraining"]),
        .library(name: "BlockwiseStore", targets: ["BlockwiseStore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C libraries (Debian: libopenblas-dev, libsqlite3-dev, zlib1g-dev, libdnnl-dev).
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
        // C glue: oneDNN convolutions (Debian: libdnnl-dev) behind a small interface whose
        // workspace the caller provides, and parallel loops on the OpenMP team oneDNN uses.
        .target(name: "CKernels", path: "Sources/CKernels",
                cSettings: [.unsafeFlags(["-O2"])],
                linkerSettings: [.linkedLibrary("dnnl"), .linkedLibrary("gomp")]),

        // A pass-through SQLite VFS that counts the bytes SQLite writes to the file system.
        .target(name: "CSQLiteVFS", dependencies: ["CSQLite"], path: "Sources/CSQLiteVFS", cSettings: [.unsafeFlags(["-O2"])]),

        // Tensors, the memory ledger, and forward/backward kernels.
        .target(name: "BlockwiseKernels", dependencies: ["CBLAS", "CKernels"]),
        // IDX data sets (Fashion-MNIST), subsets.
        .target(name: "BlockwiseData", dependencies: ["CZlib", "BlockwiseKernels"]),
        // Models, the local (transport-regularised) loss, optimisers, procedures.
        .target(name: "BlockwiseTraining", dependencies: ["BlockwiseKernels", "BlockwiseData"]),
        // Device profiles, size parsing, the cost model: a leaf (kernels' types only).
        .target(name: "BlockwiseDevice", dependencies: ["BlockwiseKernels"]),
        // The plan of a run, made before anything is allocated: per module and phase, the
        // buffers and their bytes, the (micro-)batch, the store's buffers, FLOPs and storage
        // traffic; budgets, the largest model that fits, and what to change when nothing fits.
        .target(name: "BlockwisePlan", dependencies: ["BlockwiseKernels", "BlockwiseTraining", "BlockwiseDevice"]),
        // The run report: JSON, SVG plots, HTML.
        .target(name: "BlockwiseReports", dependencies: ["BlockwiseKernels", "BlockwiseTraining", "BlockwiseDevice", "BlockwisePlan"]),
        // The SQLite feature store: levels, checkpoints, metrics; resume.
        .target(name: "BlockwiseStore", dependencies: ["CSQLite", "CSQLiteVFS", "CZlib", "BlockwiseKernels", "BlockwiseData", "BlockwiseTraining"]),
        // A run as a user asks for it: budget, store, trainer, report.
        .target(name: "BlockwiseRuntime", dependencies: ["BlockwiseKernels", "BlockwiseData", "BlockwiseTraining", "BlockwiseStore",
                                                         "BlockwiseDevice", "BlockwisePlan", "BlockwiseReports"]),
        // The thin command-line interface.
        .executableTarget(name: "blockwise", dependencies: [
            "BlockwiseKernels", "BlockwiseData", "BlockwiseTraining", "BlockwiseStore", "BlockwiseDevice", "BlockwisePlan", "BlockwiseReports", "BlockwiseRuntime",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .testTarget(name: "BlockwiseKernelsTests", dependencies: ["BlockwiseKernels"]),
        .testTarget(name: "BlockwiseDataTests", dependencies: ["BlockwiseData", "BlockwiseKernels"]),
        .testTarget(name: "BlockwiseTrainingTests", dependencies: ["BlockwiseTraining"]),
        .testTarget(name: "BlockwiseStoreTests", dependencies: ["BlockwiseStore"]),
        .testTarget(name: "BlockwiseDeviceTests", dependencies: ["BlockwiseDevice", "BlockwisePlan", "BlockwiseStore", "BlockwiseReports"]),
        .testTarget(name: "BlockwiseCLITests", dependencies: ["blockwise", "BlockwiseData", "BlockwiseTraining", "BlockwiseDevice", "BlockwisePlan", "BlockwiseStore"],
                    exclude: ["Fixtures"]),
    ],
    swiftLanguageModes: [.v5]
)
