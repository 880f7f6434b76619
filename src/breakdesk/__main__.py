from breakdesk.cli import main

main()
