from dlm_lsp.cli import main

raise SystemExit(main())
