from voice_operator.cli import main

raise SystemExit(main())
