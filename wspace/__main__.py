from wspace.cli import main

main()
