;;; dlm-lsp.el --- Code completion from a diffusion language model, via dlm-lsp  -*- lexical-binding: t; -*-

;; Author: dlm-lsp developers
;; Version: 0.1.0
;; Package-Requires: ((emacs "29.1") (eglot "1.17") (jsonrpc "1.0.24"))
;; Keywords: languages, tools, convenience
;; URL: https://github.com/dlm-lsp/dlm-lsp
;; SPDX-License-Identifier: MIT

;;; Commentary:

;; dlm-lsp is a language server that fills code in the middle with a masked diffusion model,
;; looking at the code on both sides of the cursor.  This package gives Emacs:
;;
;; - `dlm-lsp-eglot-setup': registers dlm-lsp in `eglot-server-programs', for users who make
;;   it their eglot server (completion-at-point and code actions then come from eglot).
;; - `dlm-lsp-ghost-mode': a minor mode showing the server's inline completion as ghost
;;   text, accepted with TAB and dismissed with C-g.  eglot has no inline completion client
;;   and runs one server per buffer, so this mode talks to dlm-lsp over its own `jsonrpc'
;;   connection, beside whatever eglot runs (pyright, say), as copilot.el does.
;; - `dlm-lsp-instant-edit' and `dlm-lsp-fill-holes': `workspace/executeCommand' requests,
;;   through eglot when dlm-lsp is the buffer's eglot server, else through that connection.
;;
;; Quick start:
;;   (require 'dlm-lsp)
;;   (add-hook 'python-mode-hook #'dlm-lsp-ghost-mode)

;;; Code:

(require 'cl-lib)
(require 'jsonrpc)
(require 'eglot)

(defgroup dlm-lsp nil
  "Code completion from a diffusion language model."
  :group 'tools
  :prefix "dlm-lsp-")

(defcustom dlm-lsp-command '("dlm-lsp")
  "Command line that starts the dlm-lsp server on stdio."
  :type '(repeat string))

(defcustom dlm-lsp-settings nil
  "Server settings (the \"dlm\" section), as a plist.
For example (:model \"embedded\" :maxTokens 24 :confidenceThreshold 0.9)."
  :type 'plist)

(defcustom dlm-lsp-major-modes '(python-mode python-ts-mode js-mode js-ts-mode
                                 typescript-ts-mode go-mode go-ts-mode rust-mode rust-ts-mode
                                 c-mode c-ts-mode c++-mode c++-ts-mode java-mode sh-mode)
  "Major modes `dlm-lsp-eglot-setup' registers the server for."
  :type '(repeat symbol))

(defcustom dlm-lsp-idle-delay 0.2
  "Seconds of idle time after an edit before ghost text is requested."
  :type 'number)

(defface dlm-lsp-ghost-face '((t :inherit shadow))
  "Face of the ghost text.")

;;;; eglot

;;;###autoload
(defun dlm-lsp-eglot-setup ()
  "Make dlm-lsp the eglot server of `dlm-lsp-major-modes'."
  (add-to-list 'eglot-server-programs
               `(,dlm-lsp-major-modes . (,@dlm-lsp-command
                                         :initializationOptions ,(or dlm-lsp-settings
                                                                     '(:model "embedded"))))))

(defun dlm-lsp--eglot-server ()
  "The eglot server of this buffer if it is dlm-lsp, else nil."
  (when-let* ((server (and (fboundp 'eglot-current-server) (eglot-current-server))))
    (when (equal (plist-get (eglot--server-info server) :name) "dlm-lsp")
      server)))

;;;; Own connection (used beside eglot)

(defvar dlm-lsp--connection nil "The `jsonrpc' connection to the dlm-lsp process.")
(defvar-local dlm-lsp--version 0 "Version of this buffer last sent to the server.")
(defvar-local dlm-lsp--opened nil "Non-nil once this buffer was sent with didOpen.")
(defvar dlm-lsp--encoding "utf-16" "Position encoding the server chose.")

(defun dlm-lsp--uri () (eglot-path-to-uri (or buffer-file-name (format "/tmp/%s" (buffer-name)))))

(defun dlm-lsp--language ()
  (string-remove-suffix "-mode" (string-remove-suffix "-ts-mode" (symbol-name major-mode))))

(defun dlm-lsp--column (pos)
  "LSP character of POS in `dlm-lsp--encoding'."
  (save-excursion
    (goto-char pos)
    (let ((text (buffer-substring-no-properties (line-beginning-position) pos)))
      (pcase dlm-lsp--encoding
        ("utf-32" (length text))
        ("utf-8" (string-bytes text))
        (_ (cl-loop for c across text sum (if (> c #xFFFF) 2 1)))))))

(defun dlm-lsp--position (&optional pos)
  (let ((pos (or pos (point))))
    (list :line (1- (line-number-at-pos pos t)) :character (dlm-lsp--column pos))))

(defun dlm-lsp--point (position)
  "Buffer position of the LSP POSITION plist."
  (save-excursion
    (goto-char (point-min))
    (forward-line (plist-get position :line))
    (let ((col (plist-get position :character)) (end (line-end-position)))
      (while (and (< (point) end) (> col 0))
        (setq col (- col (pcase dlm-lsp--encoding
                           ("utf-32" 1)
                           ("utf-8" (string-bytes (string (char-after))))
                           (_ (if (> (char-after) #xFFFF) 2 1)))))
        (forward-char 1))
      (point))))

(defun dlm-lsp--apply-edit (params)
  "Apply the WorkspaceEdit of a workspace/applyEdit request."
  (let* ((edit (plist-get params :edit))
         (changes (append (plist-get edit :documentChanges) nil)))
    (dolist (change changes)
      (let* ((uri (plist-get (plist-get change :textDocument) :uri))
             (buf (cl-find-if (lambda (b) (with-current-buffer b
                                            (and dlm-lsp--opened (equal (dlm-lsp--uri) uri))))
                              (buffer-list))))
        (when buf
          (with-current-buffer buf
            ;; Apply from the end so earlier positions stay valid.
            (dolist (te (sort (append (plist-get change :edits) nil)
                              (lambda (a b) (> (dlm-lsp--point (plist-get (plist-get a :range) :start))
                                               (dlm-lsp--point (plist-get (plist-get b :range) :start))))))
              (let* ((range (plist-get te :range))
                     (beg (dlm-lsp--point (plist-get range :start)))
                     (end (dlm-lsp--point (plist-get range :end))))
                (save-excursion
                  (goto-char beg)
                  (delete-region beg end)
                  (insert (plist-get te :newText)))))))))
    (list :applied t)))

(defun dlm-lsp--on-request (_conn method params)
  (pcase method
    ('workspace/applyEdit (dlm-lsp--apply-edit params))
    ('workspace/configuration
     (vconcat (mapcar (lambda (_) (or dlm-lsp-settings :json-false))
                      (plist-get params :items))))
    ('window/workDoneProgress/create nil)
    (_ (signal 'jsonrpc-error `((jsonrpc-error-code . -32601)
                                (jsonrpc-error-message . ,(format "%s not handled" method)))))))

(defun dlm-lsp--on-notification (_conn method params)
  (when (eq method 'window/logMessage)
    (when (<= (plist-get params :type) 2)
      (message "dlm-lsp: %s" (plist-get params :message)))))

(defvar dlm-lsp--ready nil "Non-nil once the server answered `initialize'.")
(defvar dlm-lsp--waiting nil "Functions to call once the connection is ready.")

(defun dlm-lsp--start ()
  "Start the server process and initialize it without waiting for the answer.
Starting takes a few seconds (Python, the model); Emacs stays responsive
meanwhile and the work queued with `dlm-lsp--when-ready' runs once the
server is ready."
  (unless (and dlm-lsp--connection (jsonrpc-running-p dlm-lsp--connection))
    (unless (executable-find (car dlm-lsp-command))
      (user-error "dlm-lsp: `%s' not found; install it with: pip install dlm-language-server"
                  (car dlm-lsp-command)))
    (let ((conn (make-instance
                 'jsonrpc-process-connection
                 :name "dlm-lsp"
                 :process (make-process :name "dlm-lsp" :command dlm-lsp-command
                                        :connection-type 'pipe :coding 'utf-8-emacs-unix
                                        :noquery t
                                        :stderr (get-buffer-create " *dlm-lsp stderr*"))
                 :request-dispatcher #'dlm-lsp--on-request
                 :notification-dispatcher #'dlm-lsp--on-notification)))
      (setq dlm-lsp--connection conn dlm-lsp--ready nil)
      (dolist (buf (buffer-list))
        (with-current-buffer buf (setq dlm-lsp--opened nil)))
      (jsonrpc-async-request
       conn :initialize
       (list :processId (emacs-pid)
             :clientInfo '(:name "Emacs dlm-lsp.el")
             :rootUri :json-false
             :initializationOptions (or dlm-lsp-settings :json-false)
             :capabilities
             '(:general (:positionEncodings ["utf-32" "utf-16"])
               :workspace (:applyEdit t :configuration t)
               :window (:workDoneProgress t)))
       :success-fn
       (lambda (result)
         (setq dlm-lsp--encoding
               (or (plist-get (plist-get result :capabilities) :positionEncoding) "utf-16"))
         (jsonrpc-notify conn :initialized (make-hash-table))
         (setq dlm-lsp--ready t)
         (let ((waiting (reverse dlm-lsp--waiting)))
           (setq dlm-lsp--waiting nil)
           (mapc #'funcall waiting)))
       :error-fn (lambda (err) (message "dlm-lsp: the server did not start: %S" err))
       :timeout 300
       :timeout-fn (lambda () (message "dlm-lsp: the server did not answer initialize")))))
  dlm-lsp--connection)

(defun dlm-lsp--when-ready (fn)
  "Call FN now if the server is ready, else once it is (starting it if needed)."
  (if (and dlm-lsp--ready dlm-lsp--connection (jsonrpc-running-p dlm-lsp--connection))
      (funcall fn)
    (dlm-lsp--start)
    (push fn dlm-lsp--waiting)))

(defun dlm-lsp--connect ()
  "The ready connection, for a command the user waits on (blocks while starting)."
  (dlm-lsp--start)
  (with-timeout (300 (user-error "dlm-lsp: the server did not start within 300 s"))
    (while (not dlm-lsp--ready)
      (accept-process-output (jsonrpc--process dlm-lsp--connection) 0.05)))
  dlm-lsp--connection)

(defun dlm-lsp--sync ()
  "Send this buffer to the server (didOpen once, then full-text didChange)."
  (let ((conn (dlm-lsp--connect))
        (text (save-restriction (widen) (buffer-substring-no-properties (point-min) (point-max)))))
    (if (not dlm-lsp--opened)
        (progn
          (setq dlm-lsp--version 1 dlm-lsp--opened t)
          (jsonrpc-notify conn :textDocument/didOpen
                          (list :textDocument (list :uri (dlm-lsp--uri)
                                                    :languageId (dlm-lsp--language)
                                                    :version 1 :text text))))
      (cl-incf dlm-lsp--version)
      (jsonrpc-notify conn :textDocument/didChange
                      (list :textDocument (list :uri (dlm-lsp--uri) :version dlm-lsp--version)
                            :contentChanges (vector (list :text text)))))
    conn))

(defun dlm-lsp--execute (command args)
  "Run the server COMMAND with ARGS, through eglot if it runs dlm-lsp here."
  (if-let* ((server (dlm-lsp--eglot-server)))
      (progn
        (eglot--signal-textDocument/didChange)
        (jsonrpc-request server :workspace/executeCommand
                         (list :command command :arguments (vector args))))
    (jsonrpc-request (dlm-lsp--sync) :workspace/executeCommand
                     (list :command command :arguments (vector args))
                     :timeout 60)))

(defun dlm-lsp--range (beg end)
  (list :start (dlm-lsp--position beg) :end (dlm-lsp--position end)))

;;;###autoload
(defun dlm-lsp-instant-edit (beg end &optional instruction)
  "Regenerate the region from BEG to END, following INSTRUCTION if not empty."
  (interactive (list (region-beginning) (region-end)
                     (read-string "Instant Edit (optional instruction): ")))
  (let* ((args (list :uri (dlm-lsp--uri) :range (dlm-lsp--range beg end)))
         (args (if (and instruction (not (string-empty-p instruction)))
                   (append args (list :instruction instruction))
                 args)))
    (unless (dlm-lsp--execute "dlm.instantEdit" args)
      (message "dlm-lsp: the model proposed no change that parses"))))

;;;###autoload
(defun dlm-lsp-fill-holes (&optional beg end)
  "Fill the holes (`...', TODO bodies, <HOLE>) in the region or the buffer."
  (interactive (when (use-region-p) (list (region-beginning) (region-end))))
  (let ((args (list :uri (dlm-lsp--uri))))
    (when (and beg end)
      (setq args (append args (list :range (dlm-lsp--range beg end)))))
    (unless (dlm-lsp--execute "dlm.fillHoles" args)
      (message "dlm-lsp: no hole was filled"))))

;;;; Ghost text

(defvar-local dlm-lsp--overlay nil)
(defvar-local dlm-lsp--items nil "Inline completion items of the current suggestion.")
(defvar-local dlm-lsp--index 0)
(defvar-local dlm-lsp--timer nil)
(defvar-local dlm-lsp--request-id nil)

(defvar dlm-lsp-ghost-active-map
  (let ((map (make-sparse-keymap)))
    (define-key map (kbd "TAB") #'dlm-lsp-accept)
    (define-key map (kbd "<tab>") #'dlm-lsp-accept)
    (define-key map (kbd "M-f") #'dlm-lsp-accept-word)
    (define-key map (kbd "C-<right>") #'dlm-lsp-accept-word)
    (define-key map (kbd "M-e") #'dlm-lsp-accept-line)
    (define-key map (kbd "C-<down>") #'dlm-lsp-accept-line)
    (define-key map (kbd "C-g") #'dlm-lsp-dismiss)
    (define-key map (kbd "M-]") #'dlm-lsp-next)
    (define-key map (kbd "M-[") #'dlm-lsp-previous)
    map)
  "Keys active while ghost text is shown.")

(define-minor-mode dlm-lsp--ghost-visible-mode
  "Internal: on while ghost text is shown, to activate `dlm-lsp-ghost-active-map'."
  :keymap dlm-lsp-ghost-active-map)

(defun dlm-lsp-ghost-text ()
  "The ghost text shown now, or nil."
  (when (overlayp dlm-lsp--overlay)
    (substring-no-properties (or (overlay-get dlm-lsp--overlay 'after-string) ""))))

(defun dlm-lsp-dismiss ()
  "Hide the ghost text."
  (interactive)
  (when (overlayp dlm-lsp--overlay) (delete-overlay dlm-lsp--overlay))
  (setq dlm-lsp--overlay nil dlm-lsp--items nil)
  (dlm-lsp--ghost-visible-mode -1))

(defun dlm-lsp--item-text (item)
  (let ((text (plist-get item :insertText)))
    (if (stringp text) text (plist-get text :value))))

(defun dlm-lsp--show ()
  "Draw the current item as an overlay at point."
  (when (overlayp dlm-lsp--overlay) (delete-overlay dlm-lsp--overlay))
  (when-let* ((item (nth dlm-lsp--index dlm-lsp--items)))
    (let* ((range (plist-get item :range))
           (beg (if range (dlm-lsp--point (plist-get range :start)) (point)))
           (typed (buffer-substring-no-properties beg (point)))
           (text (dlm-lsp--item-text item)))
      ;; The item replaces [beg, point): show only what is not typed yet.
      (when (and (string-prefix-p typed text) (> (length text) (length typed)))
        (setq dlm-lsp--overlay (make-overlay (point) (point) nil nil t))
        (overlay-put dlm-lsp--overlay 'after-string
                     (propertize (substring text (length typed)) 'face 'dlm-lsp-ghost-face
                                 'cursor 0))
        (dlm-lsp--ghost-visible-mode 1)))))

(defun dlm-lsp-accept ()
  "Insert the ghost text."
  (interactive)
  (if-let* ((item (nth dlm-lsp--index dlm-lsp--items)))
      (let* ((range (plist-get item :range))
             (beg (if range (dlm-lsp--point (plist-get range :start)) (point)))
             (end (if range (max (point) (dlm-lsp--point (plist-get range :end))) (point))))
        (dlm-lsp-dismiss)
        (delete-region beg end)
        (goto-char beg)
        (insert (dlm-lsp--item-text item)))
    (dlm-lsp-dismiss)))

(defun dlm-lsp--next-part (text unit)
  "The start of TEXT that accepting one UNIT (`word' or `line') takes.
A word: blanks, then a run of word characters or of other characters (\"foo\",
\" bar\", \"(\", \"):\").  A line: the rest of the line, or at a line break the
break and the next line."
  (let ((case-fold-search nil))
    (if (eq unit 'line)
        (progn (string-match "\\`\n?[^\n]*" text) (match-string 0 text))
      (if (string-match "\\`[ \t\n]*\\(?:[[:alnum:]_]+\\|[^[:alnum:]_ \t\n]+\\)" text)
          (match-string 0 text)
        text))))

(defun dlm-lsp--accept-part (unit)
  "Insert the ghost text up to the end of its next UNIT; the rest stays shown."
  (let ((item (nth dlm-lsp--index dlm-lsp--items))
        (ghost (dlm-lsp-ghost-text)))
    (if (not (and item ghost))
        (dlm-lsp-dismiss)
      (let ((part (dlm-lsp--next-part ghost unit)))
        (if (>= (length part) (length ghost))
            (dlm-lsp-accept)
          (unless (plist-get item :range)  ; anchor it, so that the rest is what is shown
            (let ((here (dlm-lsp--position (point))))
              (setq item (append (list :range (list :start here :end here)) item))))
          (let ((items (copy-sequence dlm-lsp--items)) (index dlm-lsp--index))
            (setf (nth index items) item)
            (insert part)              ; the change hook hides the rest and asks again
            (setq dlm-lsp--items items dlm-lsp--index index)
            (dlm-lsp--show)))))))

(defun dlm-lsp-accept-word ()
  "Insert the next word of the ghost text."
  (interactive)
  (dlm-lsp--accept-part 'word))

(defun dlm-lsp-accept-line ()
  "Insert the rest of the ghost text's line (at its end: the next line)."
  (interactive)
  (dlm-lsp--accept-part 'line))

(defun dlm-lsp-next (&optional n)
  "Show the next suggestion (N steps)."
  (interactive "p")
  (when dlm-lsp--items
    (setq dlm-lsp--index (mod (+ dlm-lsp--index (or n 1)) (length dlm-lsp--items)))
    (dlm-lsp--show)))

(defun dlm-lsp-previous ()
  "Show the previous suggestion."
  (interactive)
  (dlm-lsp-next -1))

(defun dlm-lsp-complete-inline ()
  "Ask the server for ghost text at point (once it has started; never blocks)."
  (interactive)
  (let ((buf (current-buffer)))
    (dlm-lsp--when-ready
     (lambda () (when (buffer-live-p buf)
                  (with-current-buffer buf (dlm-lsp--request-inline)))))))

(defun dlm-lsp--request-inline ()
  (let ((conn (dlm-lsp--sync))
        (buf (current-buffer))
        (tick (buffer-chars-modified-tick))
        (pt (point)))
    (when dlm-lsp--request-id
      (jsonrpc-notify conn :$/cancelRequest (list :id dlm-lsp--request-id)))
    (setq dlm-lsp--request-id
          (car (jsonrpc-async-request
                conn :textDocument/inlineCompletion
                (list :textDocument (list :uri (dlm-lsp--uri))
                      :position (dlm-lsp--position pt)
                      :context (list :triggerKind 2))
                :success-fn
                (lambda (result)
                  (when (buffer-live-p buf)
                    (with-current-buffer buf
                      (setq dlm-lsp--request-id nil)
                      ;; Show only if nothing changed while the model ran.
                      (when (and (= tick (buffer-chars-modified-tick)) (= pt (point)))
                        (setq dlm-lsp--items (append (if (vectorp result) result
                                                       (plist-get result :items))
                                                     nil)
                              dlm-lsp--index 0)
                        (dlm-lsp--show)))))
                :error-fn (lambda (_err) (when (buffer-live-p buf)
                                           (with-current-buffer buf
                                             (setq dlm-lsp--request-id nil))))
                :timeout-fn #'ignore)))))

(defun dlm-lsp--after-change (&rest _)
  (dlm-lsp-dismiss)
  (when (timerp dlm-lsp--timer) (cancel-timer dlm-lsp--timer))
  (let ((buf (current-buffer)))
    (setq dlm-lsp--timer
          (run-with-idle-timer dlm-lsp-idle-delay nil
                               (lambda () (when (and (buffer-live-p buf)
                                                     (eq buf (current-buffer)))
                                            (with-current-buffer buf
                                              (dlm-lsp-complete-inline))))))))

(defun dlm-lsp--post-command ()
  (unless (memq this-command '(dlm-lsp-next dlm-lsp-previous dlm-lsp-complete-inline
                               self-insert-command))
    (when (and (overlayp dlm-lsp--overlay)
               (/= (point) (overlay-start dlm-lsp--overlay)))
      (dlm-lsp-dismiss))))

(defun dlm-lsp--close ()
  (when (and dlm-lsp--opened dlm-lsp--connection (jsonrpc-running-p dlm-lsp--connection))
    (jsonrpc-notify dlm-lsp--connection :textDocument/didClose
                    (list :textDocument (list :uri (dlm-lsp--uri)))))
  (setq dlm-lsp--opened nil))

;;;###autoload
(define-minor-mode dlm-lsp-ghost-mode
  "Show dlm-lsp's inline completion as ghost text.
TAB accepts it, M-f (or C-<right>) its next word, M-e (or C-<down>) the
rest of its line; M-] and M-[ show the next and previous suggestion, C-g
dismisses it."
  :lighter " dlm"
  (if dlm-lsp-ghost-mode
      (progn
        (add-hook 'after-change-functions #'dlm-lsp--after-change nil t)
        (add-hook 'post-command-hook #'dlm-lsp--post-command nil t)
        (add-hook 'kill-buffer-hook #'dlm-lsp--close nil t))
    (remove-hook 'after-change-functions #'dlm-lsp--after-change t)
    (remove-hook 'post-command-hook #'dlm-lsp--post-command t)
    (remove-hook 'kill-buffer-hook #'dlm-lsp--close t)
    (dlm-lsp-dismiss)
    (dlm-lsp--close)))

(provide 'dlm-lsp)
;;; dlm-lsp.el ends here
