;;; dlm-lsp-test.el --- Batch tests of dlm-lsp.el against the real server  -*- lexical-binding: t; -*-

;; DLM_TEST_MODEL=<checkpoint> DLM_TEST_CMD="python -m dlm_lsp" \
;;   emacs --batch -Q -L editors/emacs -l editors/emacs/test/dlm-lsp-test.el \
;;         -f ert-run-tests-batch-and-exit
;; The checkpoint is a "parrot" test model that writes `1' in every slot.

;;; Code:

(require 'ert)
(require 'python)
(require 'dlm-lsp)

(defvar dlm-lsp-test-settings
  (list :model (getenv "DLM_TEST_MODEL") :maxTokens 6 :maxBlockTokens 10 :debounceMs 0))

(setq dlm-lsp-command (split-string (or (getenv "DLM_TEST_CMD") "dlm-lsp"))
      dlm-lsp-settings dlm-lsp-test-settings
      eglot-sync-connect t
      eglot-autoshutdown t)

(defconst dlm-lsp-test-source "import math

def area(r):
    return math.pi * 

class Shape:
    def size(self):
        ...

def volume(r):
    return r
")

(defun dlm-lsp-test--wait (pred &optional seconds)
  "Process events until PRED is non-nil or SECONDS (default 30) pass; return PRED's value."
  (let ((end (+ (float-time) (or seconds 30))) value)
    (while (and (not (setq value (funcall pred))) (< (float-time) end))
      (accept-process-output nil 0.05))
    value))

(defun dlm-lsp-test--line (n)
  (save-excursion (goto-char (point-min)) (forward-line (1- n))
                  (buffer-substring-no-properties (line-beginning-position) (line-end-position))))

(defmacro dlm-lsp-test--with-buffer (&rest body)
  "Run BODY in a python-mode buffer visiting a temporary file of `dlm-lsp-test-source'."
  (declare (indent 0))
  `(let* ((dir (make-temp-file "dlm-lsp-test" t))
          (file (expand-file-name "demo.py" dir)))
     (with-temp-file file (insert dlm-lsp-test-source))
     (let ((buf (find-file-noselect file)))
       (unwind-protect
           (with-current-buffer buf
             (python-mode)
             ,@body)
         (with-current-buffer buf (set-buffer-modified-p nil))
         (let ((kill-buffer-query-functions nil)) (kill-buffer buf))))))

(defun dlm-lsp-test--eglot-ready ()
  "Start eglot with dlm-lsp for this buffer and wait for the model."
  (dlm-lsp-eglot-setup)
  (apply #'eglot (eglot--guess-contact))
  (let ((server (dlm-lsp-test--wait #'eglot-current-server)))
    (should server)
    (should (dlm-lsp-test--wait
             (lambda () (equal "ready" (plist-get (jsonrpc-request server :workspace/executeCommand
                                                                   '(:command "dlm.status"))
                                                  :state)))
             60))
    server))

(ert-deftest dlm-lsp-eglot-completion-at-point-inserts-the-server-completion ()
  (dlm-lsp-test--with-buffer
    (let ((server (dlm-lsp-test--eglot-ready)))
      (should (equal "dlm-lsp" (plist-get (eglot--server-info server) :name)))
      (goto-char (point-min)) (forward-line 3) (end-of-line)
      (let ((t0 (float-time)))
        (completion-at-point)
        (message "eglot completion round trip: %.0f ms" (* 1000 (- (float-time) t0))))
      (should (string-match-p "^    return math\\.pi \\* 1+$" (dlm-lsp-test--line 4))))))

(ert-deftest dlm-lsp-instant-edit-command-changes-the-buffer-through-eglot ()
  (dlm-lsp-test--with-buffer
    (dlm-lsp-test--eglot-ready)
    (goto-char (point-min)) (forward-line 10)
    (let ((before (buffer-string)))
      (dlm-lsp-instant-edit (line-beginning-position) (line-end-position) "double it")
      (should (dlm-lsp-test--wait (lambda () (not (equal before (buffer-string))))))
      (should (string-match-p "1" (dlm-lsp-test--line 11))))))

(ert-deftest dlm-lsp-fill-holes-over-its-own-connection-edits-the-buffer ()
  (dlm-lsp-test--with-buffer
    (dlm-lsp-fill-holes)
    (should (dlm-lsp-test--wait (lambda () (string-match-p "1" (dlm-lsp-test--line 8))) 60))
    (should-not (string-match-p "\\.\\.\\." (dlm-lsp-test--line 8)))))

(ert-deftest dlm-lsp-ghost-mode-shows-and-accepts-a-suggestion-beside-eglot ()
  (dlm-lsp-test--with-buffer
    (dlm-lsp-test--eglot-ready)  ; eglot runs its own server for this buffer meanwhile
    (dlm-lsp-ghost-mode 1)
    (goto-char (point-min)) (forward-line 10) (end-of-line)
    (insert " *")
    (let ((t0 (float-time)))
      (dlm-lsp-complete-inline)
      (should (dlm-lsp-test--wait #'dlm-lsp-ghost-text 60))
      (message "ghost text round trip: %.0f ms" (* 1000 (- (float-time) t0))))
    (should (string-match-p "1" (dlm-lsp-ghost-text)))
    (should dlm-lsp--ghost-visible-mode)
    (should (eq (lookup-key dlm-lsp-ghost-active-map (kbd "TAB")) #'dlm-lsp-accept))
    (let ((ghost (dlm-lsp-ghost-text)))
      (dlm-lsp-accept)
      (should-not (dlm-lsp-ghost-text))
      (should (equal (dlm-lsp-test--line 11) (concat "    return r *" ghost))))
    ;; A second suggestion is dismissed with C-g's command and leaves the buffer alone.
    (insert "\n")
    (dlm-lsp-complete-inline)
    (when (dlm-lsp-test--wait #'dlm-lsp-ghost-text 30)
      (let ((before (buffer-string)))
        (dlm-lsp-dismiss)
        (should-not (dlm-lsp-ghost-text))
        (should (equal before (buffer-string)))))))

(ert-deftest dlm-lsp-ghost-text-is-accepted-a-word-or-a-line-at-a-time ()
  (should (equal (dlm-lsp--next-part "foo(bar)" 'word) "foo"))
  (should (equal (dlm-lsp--next-part " = 1" 'word) " ="))
  (should (equal (dlm-lsp--next-part "):\n  x" 'word) "):"))
  (should (equal (dlm-lsp--next-part "\n    return y" 'word) "\n    return"))
  (should (equal (dlm-lsp--next-part "  " 'word) "  "))
  (should (equal (dlm-lsp--next-part "abc\ndef" 'line) "abc"))
  (should (equal (dlm-lsp--next-part "\ndef\nghi" 'line) "\ndef"))
  (should (eq (lookup-key dlm-lsp-ghost-active-map (kbd "M-f")) #'dlm-lsp-accept-word))
  (should (eq (lookup-key dlm-lsp-ghost-active-map (kbd "M-e")) #'dlm-lsp-accept-line))
  (with-temp-buffer
    (python-mode)
    (dlm-lsp-ghost-mode 1)              ; its change hook runs as for a user
    (insert "def f():\n    x")
    ;; an item without a range is anchored where it was shown
    (setq dlm-lsp--items (list (list :insertText "y = foo(bar, baz)\n    return y"))
          dlm-lsp--index 0)
    (dlm-lsp--show)
    (unwind-protect
        (progn
          (should (equal (dlm-lsp-ghost-text) "y = foo(bar, baz)\n    return y"))
          (dlm-lsp-accept-word)
          (should (equal (buffer-string) "def f():\n    xy"))
          (should (equal (dlm-lsp-ghost-text) " = foo(bar, baz)\n    return y"))
          (dlm-lsp-accept-word)
          (should (equal (dlm-lsp-test--line 2) "    xy ="))
          (dlm-lsp-accept-line)
          (should (equal (dlm-lsp-test--line 2) "    xy = foo(bar, baz)"))
          (should (equal (dlm-lsp-ghost-text) "\n    return y"))
          (dlm-lsp-accept-line)           ; the last line: the whole rest, as TAB
          (should (equal (buffer-string) "def f():\n    xy = foo(bar, baz)\n    return y"))
          (should (= (point) (point-max)))
          (should-not (dlm-lsp-ghost-text)))
      (when (timerp dlm-lsp--timer) (cancel-timer dlm-lsp--timer))
      (dlm-lsp-ghost-mode -1))))

(ert-deftest dlm-lsp-ghost-text-starts-the-server-without-blocking-emacs ()
  ;; A fresh server: the request returns before the server has even answered initialize,
  ;; and the ghost text still appears once it has.
  (when (and dlm-lsp--connection (jsonrpc-running-p dlm-lsp--connection))
    (jsonrpc-shutdown dlm-lsp--connection))
  (setq dlm-lsp--connection nil dlm-lsp--ready nil dlm-lsp--waiting nil)
  (dlm-lsp-test--with-buffer
    (dlm-lsp-ghost-mode 1)
    (goto-char (point-min)) (forward-line 10) (end-of-line)
    (insert " *")
    (dlm-lsp-complete-inline)
    (should-not dlm-lsp--ready)
    (should (= 1 (length dlm-lsp--waiting)))
    (should (dlm-lsp-test--wait #'dlm-lsp-ghost-text 120))
    (should dlm-lsp--ready)))

(ert-deftest dlm-lsp-instant-edit-of-a-whole-line-keeps-its-indentation ()
  (dlm-lsp-test--with-buffer
    (goto-char (point-min)) (forward-line 3)
    (let ((before (dlm-lsp-test--line 4)))
      (should (string-prefix-p "    return" before))
      ;; the whole line, from column 0 and with its line break, as `V' or a mouse selects it
      (dlm-lsp-instant-edit (line-beginning-position) (1+ (line-end-position)))
      (should (dlm-lsp-test--wait (lambda () (not (equal before (dlm-lsp-test--line 4)))) 60))
      (should (string-match-p "^    [^ ]" (dlm-lsp-test--line 4)))
      (should (string-prefix-p "class Shape" (dlm-lsp-test--line 6))))))

;;; dlm-lsp-test.el ends here
