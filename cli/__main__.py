from repkernel_cli.app import main

main()
