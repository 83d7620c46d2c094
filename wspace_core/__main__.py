from wspace_core.cli import main

main()
